"""The Chainlit handlers of the RAG chat. Prompting lives in rag.py, HTTP in clients.py, settings in settings.py.

Run it with ``python -m frontend`` (or ``CHAINLIT_APP_ROOT=frontend chainlit run frontend/app.py``).
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import chainlit as cl
from chainlit.config import FILES_DIRECTORY
from chainlit.input_widget import Select, Slider

from frontend import health
from frontend.clients import ContextTooLong, LLMClient, ModelInfo, RetrieverClient, ServiceError
from frontend.events import EMPTY_RETRIES, MESSAGES, TTFT, log_event
from frontend.rag import Passage, PromptError, PromptTemplate, PromptTooLongError, Turn, build_prompt
from frontend.settings import SettingsError, get_settings

try:
    SETTINGS = get_settings()
    TEMPLATE = PromptTemplate.load(SETTINGS.prompt_file)
except (SettingsError, PromptError) as exc:  # a configuration mistake: one clear line, no traceback
    raise SystemExit(f"ragtune chat: {exc}") from None

MAX_HISTORY_TURNS = 50
health.install(SETTINGS)


# -- session state ----------------------------------------------------------------------------------------------


def _state(key: str) -> Any:
    return cl.user_session.get(key)


def _model_info(model: str) -> ModelInfo:
    models: dict[str, ModelInfo] = _state("models") or {}
    return models.get(model) or ModelInfo(id=model)


def _settings_widgets(models: dict[str, ModelInfo], model: str, top_k: int, temperature: float) -> list[Any]:
    items = {(f"{m.id} — {m.description}" if m.description else m.id): m.id for m in models.values()}
    if not items and model:
        items = {model: model}
    picker: list[Any] = []
    if items:
        picker.append(
            Select(
                id="model",
                label="Model",
                items=items,
                initial_value=model,
                description=_model_info(model).summary().replace("**", "") if model else None,
            )
        )
    return picker + [
        Slider(
            id="top_k",
            label="Passages to retrieve (top_k)",
            initial=top_k,
            min=1,
            max=SETTINGS.max_top_k,
            step=1,
            description="How many document passages the answer may draw on.",
        ),
        Slider(
            id="temperature",
            label="Temperature",
            initial=temperature,
            min=0.0,
            max=2.0,
            step=0.1,
            description="Higher is more varied, lower is more literal.",
        ),
    ]


async def _refresh_models() -> dict[str, ModelInfo]:
    """Fetch the model list into the session; on failure keep what we had and say why."""
    llm: LLMClient = _state("llm")
    try:
        listed = await llm.list_models()
    except ServiceError as err:
        await cl.Message(content=f"⚠️ {err.user_message}").send()
        return _state("models") or {}
    models = {m.id: m for m in listed}
    cl.user_session.set("models", models)
    return models


# -- handlers ---------------------------------------------------------------------------------------------------


@cl.set_starters
async def starters(user: cl.User | None = None, language: str | None = None) -> list[cl.Starter]:
    """Example prompts shown on an empty chat."""
    return [cl.Starter(label=s.label, message=s.message) for s in SETTINGS.starters]


@cl.on_chat_start
async def on_chat_start() -> None:
    """Connect to the predictors, list the models and offer the chat settings."""
    cl.user_session.set("retriever", RetrieverClient(SETTINGS))
    cl.user_session.set("llm", LLMClient(SETTINGS))
    cl.user_session.set("history", [])
    models = await _refresh_models()
    if SETTINGS.default_model and (SETTINGS.default_model in models or not models):
        model = SETTINGS.default_model
    else:
        model = next(iter(models), "")
    cl.user_session.set("model", model)
    cl.user_session.set("top_k", min(TEMPLATE.retrieval.top_k, SETTINGS.max_top_k))
    cl.user_session.set("temperature", TEMPLATE.generation.temperature)
    await cl.ChatSettings(_settings_widgets(models, model, _state("top_k"), _state("temperature"))).send()
    log_event("chat_start", model=model or "-", models=len(models))


@cl.on_settings_update
async def on_settings_update(values: dict[str, Any]) -> None:
    """Apply new chat settings; a change of model is confirmed with the model's info."""
    models: dict[str, ModelInfo] = _state("models") or {}
    model = values.get("model", _state("model"))
    if models and model not in models:
        models = await _refresh_models()
    if not isinstance(model, str) or (models and model not in models):
        await cl.Message(content=f"⚠️ Unknown model {model!r}: pick one of {', '.join(models) or 'none'}.").send()
        return
    try:
        top_k = int(values.get("top_k", _state("top_k")))
        temperature = float(values.get("temperature", _state("temperature")))
    except (TypeError, ValueError):
        await cl.Message(content="⚠️ top_k must be a whole number and temperature a number.").send()
        return
    if not 1 <= top_k <= SETTINGS.max_top_k:
        await cl.Message(content=f"⚠️ top_k must be between 1 and {SETTINGS.max_top_k}.").send()
        return
    if not 0.0 <= temperature <= 2.0:
        await cl.Message(content="⚠️ temperature must be between 0 and 2.").send()
        return
    changed = model != _state("model")
    cl.user_session.set("model", model)
    cl.user_session.set("top_k", top_k)
    cl.user_session.set("temperature", temperature)
    log_event("settings_update", model=model, top_k=top_k, temperature=temperature)
    if changed:
        # Re-send the widgets so the picker's description shows the new model's info.
        await cl.ChatSettings(_settings_widgets(models, model, top_k, temperature)).send()
        await cl.Message(content=f"Now answering with {_model_info(model).summary()}.").send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    """Retrieve passages, build the prompt within the model's window, stream the answer, list the sources."""
    started = time.perf_counter()
    outcome = "error"
    try:
        outcome = await _answer(message.content, started)
    except Exception as exc:  # last line of defence: the chat must keep working and never show a traceback
        log_event("chat_error", error=type(exc).__name__, detail=str(exc)[:300])
        await cl.ErrorMessage(content="Something went wrong while answering. Please try again.").send()
    finally:
        MESSAGES.labels(outcome).inc()


@cl.on_chat_end
async def on_chat_end() -> None:
    """Close this chat's HTTP connections."""
    for key in ("retriever", "llm"):
        client = _state(key)
        if client is not None:
            await client.aclose()


# -- the answer -------------------------------------------------------------------------------------------------


async def _answer(text: str, started: float) -> str:
    question = text.strip()
    if not question:
        await cl.Message(content="Please type a question.").send()
        return "empty"
    if _state("llm") is None:  # a message before on_chat_start finished (or after a restart): set up again
        await on_chat_start()
    model: str = _state("model") or ""
    if not model:
        models = await _refresh_models()
        model = next(iter(models), "")
        if not model:
            await cl.ErrorMessage(content="No language model is available yet. Please try again shortly.").send()
            return "no_model"
        cl.user_session.set("model", model)
    top_k: int = _state("top_k")
    info = _model_info(model)
    window = info.context_window or SETTINGS.default_context_window

    retriever: RetrieverClient = _state("retriever")
    async with cl.Step(name="Search the documents", type="retrieval", show_input=False) as step:
        step.input = question
        try:
            passages = await retriever.search(question, top_k)
        except ServiceError as err:
            step.output = err.user_message
            step.is_error = True
            passages = None
            search_error = err
        else:
            step.output = f"{len(passages)} passages found"
    if passages is None:
        await cl.ErrorMessage(content=search_error.user_message).send()
        return f"{search_error.service}_{search_error.kind}"

    history: list[Turn] = _state("history")
    try:
        built = build_prompt(TEMPLATE, question, passages, history, window=window, model=model)
    except PromptTooLongError as err:
        await cl.ErrorMessage(
            content=f"Your message is too long for {model}: about {err.tokens} tokens with the answer, and the "
            f"model reads at most {err.window}. Please shorten it."
        ).send()
        return "too_long"
    log_event(
        "prompt",
        model=model,
        window=window,
        prompt_tokens=built.prompt_tokens,
        max_tokens=built.max_tokens,
        passages=len(built.passages),
        dropped_passages=built.dropped_passages,
        history_turns=built.history_turns,
        dropped_turns=built.dropped_turns,
    )

    answer = cl.Message(content="")
    status: cl.Message | None = None

    async def on_busy(attempt: int, retries: int, delay: float) -> None:
        nonlocal status
        note = f"⏳ The model is busy; retrying in {delay:.1f} s (retry {attempt} of {retries})…"
        if status is None:
            status = cl.Message(content=note)
            await status.send()
        else:
            status.content = note
            await status.update()

    llm: LLMClient = _state("llm")
    gen = TEMPLATE.generation
    first_token_at: float | None = None

    async def generate(temperature: float) -> ServiceError | None:
        """Stream one answer into ``answer``; the error that ended it, or None."""
        nonlocal built, first_token_at, status
        failure: ServiceError | None = None
        for attempt in range(2):
            try:
                async for token in llm.stream_chat(
                    model=model,
                    messages=built.messages,
                    max_tokens=built.max_tokens,
                    temperature=temperature,
                    top_p=gen.top_p,
                    stop=gen.stop,
                    on_busy=on_busy,
                ):
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                        TTFT.observe(first_token_at - started)
                        if status is not None:
                            await status.remove()
                            status = None
                    await answer.stream_token(token)
                return None
            except ContextTooLong as err:
                # The server's tokenizer counted more than the estimate: shrink by what it reported, once.
                failure = err
                if attempt == 1:
                    break
                smaller = window - 2 * (err.overflow or window // 4) - TEMPLATE.budget.safety_tokens
                log_event("prompt_rebuilt", model=model, window=window, overflow=err.overflow, budget=smaller)
                try:
                    built = build_prompt(TEMPLATE, question, passages, history, window=smaller, model=model)
                except PromptTooLongError:
                    break
            except ServiceError as err:
                return err
        return failure

    temperature: float = _state("temperature")
    failure = await generate(temperature)
    if failure is None and not answer.content.strip() and temperature > 0:
        # A small model sampling at temperature > 0 sometimes draws a stop sequence first and says nothing; the
        # greedy continuation of the same prompt is the model's most likely answer, so ask once more for that.
        log_event("empty_answer_retry", model=model, temperature=temperature)
        EMPTY_RETRIES.inc()
        answer.content = ""
        failure = await generate(0.0)
    if status is not None:
        await status.remove()

    if failure is not None and first_token_at is None:
        await cl.ErrorMessage(content=failure.user_message).send()
        return f"{failure.service}_{failure.kind}"

    reply = answer.content.strip()
    body = reply or "_(The model returned an empty answer.)_"
    if failure is not None:
        body += f"\n\n⚠️ The answer was cut off: {failure.user_message}"
    elements = _source_elements(built.passages)
    sources_line = "**Sources:** " + ", ".join(e.name for e in elements) if elements else "_No sources were found._"
    footer = f"_{model} · {len(built.passages)} passages · window {window} tokens_"
    answer.content = f"{body}\n\n{sources_line}\n\n{footer}"
    answer.elements = elements  # type: ignore[assignment]
    # Chainlit persists element content under FILES_DIRECTORY and removes that whole folder when any Chainlit server
    # sharing the app root shuts down; recreate it so one server's exit cannot break another's answers.
    FILES_DIRECTORY.mkdir(parents=True, exist_ok=True)
    await answer.send()

    if reply and failure is None:
        history.append(Turn(question=question, answer=reply))
        del history[:-MAX_HISTORY_TURNS]
    log_event(
        "answer",
        model=model,
        ttft_ms=round(((first_token_at or time.perf_counter()) - started) * 1000),
        total_ms=round((time.perf_counter() - started) * 1000),
        chars=len(reply),
        sources=len(elements),
    )
    return "ok" if failure is None else "cut_off"


def _source_elements(passages: list[Passage]) -> list[cl.Text]:
    """One side element per passage in the prompt, numbered as the prompt numbers them (the model cites [n])."""
    elements = []
    for i, p in enumerate(passages, start=1):
        facts = [f"**Document:** {p.document}"]
        if p.page_label:
            facts.append(f"**Page:** {p.page_label}")
        if p.heading:
            facts.append(f"**Heading:** {p.heading}")
        facts.append(f"**Score:** {p.score:.3f}")
        excerpt = p.text.strip()
        if len(excerpt) > 1200:
            excerpt = excerpt[:1200].rstrip() + " …"
        quoted = "\n".join("> " + line if line else ">" for line in excerpt.splitlines())
        elements.append(
            cl.Text(name=f"[{i}] {p.document}", content="  \n".join(facts) + "\n\n" + quoted, display="side")
        )
    return elements


if SETTINGS.auth_enabled:
    # Chainlit signs its session tokens with this secret; a per-process one works for a single replica.
    if not os.environ.get("CHAINLIT_AUTH_SECRET"):
        os.environ["CHAINLIT_AUTH_SECRET"] = secrets.token_urlsafe(48)
        log_event("auth_secret_generated", note="set CHAINLIT_AUTH_SECRET to keep logins across restarts")

    @cl.password_auth_callback
    def password_login(username: str, password: str) -> cl.User | None:
        """Accept the one configured user; compare in constant time."""
        expected = SETTINGS.auth_password.get_secret_value()  # type: ignore[union-attr]
        ok = secrets.compare_digest(username.encode(), SETTINGS.auth_username.encode()) & secrets.compare_digest(
            password.encode(), expected.encode()
        )
        log_event("login", user=username[:64], ok=ok)
        return cl.User(identifier=username, metadata={"provider": "password"}) if ok else None

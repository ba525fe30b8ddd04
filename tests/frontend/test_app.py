"""The Chainlit handlers against the real retriever and LLM predictors, through a Chainlit test context.

Every test talks to real servers on free ports (see conftest). The busy/not-ready cases put a small local stand-in
in front of the real LLM that answers 429/503 on cue and otherwise forwards: making a real server busy at an exact
moment is the one boundary that is replaced (a real saturated queue is tested too, in test_real_queue_full_...).
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from tests.frontend.conftest import MODEL_A, MODEL_B, TEST_TOP_K, ChatSession, run, start_llm
from tests.servers import free_port

SECRET_KEY = "sk-ragtune-test-secret-123456"
QUESTION = "How do I create a virtual environment with venv?"


def _no_traceback(reply) -> None:
    text = reply.text()
    assert "Traceback" not in text and 'File "' not in text, text


def test_message_streams_an_answer_with_sources(chat_app, monkeypatch):
    """A question gives a retrieval step, streamed tokens, one answer and its sources as elements."""
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_api_key": None}))

    async def scenario():
        chat = ChatSession()
        start = await chat.start()
        # chat settings: the models from /openai/v1/models with their descriptions, top_k, temperature
        widgets = start.of("emit:chat_settings")[0]
        picker = next(w for w in widgets if w["id"] == "model")
        assert {i["value"] for i in picker["items"]} == {MODEL_A, MODEL_B}
        assert any("packaged base model" in i["label"] for i in picker["items"])
        assert "context window 2048" in picker["description"]
        assert {w["id"] for w in widgets} == {"model", "top_k", "temperature"}
        assert next(w for w in widgets if w["id"] == "top_k")["initial"] == TEST_TOP_K

        reply = await chat.send(QUESTION)
        await chat.end()
        return reply

    reply = run(scenario())
    _no_traceback(reply)
    assert not reply.errors, [e["output"] for e in reply.errors]
    retrieval = [s for s in reply.steps if s.get("type") == "retrieval"]
    assert retrieval and "passages found" in retrieval[-1]["output"]
    assert len(reply.streamed) == 1 and len(reply.tokens) >= 2, "the answer was not streamed token by token"
    answer = reply.messages[-1]
    streamed_text = reply.streamed[0]["output"] + "".join(reply.tokens)
    assert streamed_text.strip() and answer["output"].startswith(streamed_text.strip())
    assert "**Sources:**" in answer["output"] and MODEL_A in answer["output"]
    elements = reply.elements
    assert 1 <= len(elements) <= TEST_TOP_K and all(e["forId"] == answer["id"] for e in elements)
    assert all(e["type"] == "text" and e["display"] == "side" for e in elements)
    names = [e["name"] for e in elements]
    assert names[0].startswith("[1] ") and all(n in answer["output"] for n in names)
    # the passage about virtual environments is among the sources
    assert any("virtual_environments.html" in n for n in names), names


def test_element_shows_document_page_heading_and_score(chat_app):
    async def scenario():
        chat = ChatSession()
        await chat.start()
        await chat.update_settings({"model": MODEL_A, "top_k": 3, "temperature": 0.0})
        reply = await chat.send("What happens when an exception is not handled?")
        return chat, reply

    chat, reply = run(scenario())
    assert not reply.errors, [e["output"] for e in reply.errors]
    assert len(reply.elements) == 3
    # element content is persisted through the session (Chainlit's file store): check what was persisted
    persisted = [c.kwargs["content"] for c in chat.session.persist_file.call_args_list]
    assert len(persisted) == 3
    for content in persisted:
        assert "**Document:**" in content and "**Score:**" in content
    assert any("**Page:**" in c for c in persisted + []) or any("**Heading:**" in c for c in persisted)
    assert any("python_tutorial_modules_errors.pdf" in e["name"] for e in reply.elements)


def test_settings_update_switches_the_model(chat_app):
    async def scenario():
        chat = ChatSession()
        await chat.start()
        switched = await chat.update_settings({"model": MODEL_B, "top_k": 2, "temperature": 0.2})
        reply = await chat.send("What does the os module provide?")
        bad = await chat.update_settings({"model": "../../etc/passwd", "top_k": 2, "temperature": 0.2})
        still = await chat.state("model")
        return switched, reply, bad, still

    switched, reply, bad, still = run(scenario())
    picker = next(w for w in switched.of("emit:chat_settings")[-1] if w["id"] == "model")
    assert picker["initial"] == MODEL_B and "context window 1024" in picker["description"]
    note = switched.messages[-1]["output"]
    assert f"Now answering with **{MODEL_B}**" in note and "second catalog entry" in note and "1024" in note
    assert not reply.errors, [e["output"] for e in reply.errors]
    answer = reply.messages[-1]["output"]
    # the smaller window of MODEL_B may leave room for only one of the two passages
    assert MODEL_B in answer and "window 1024 tokens" in answer
    assert 1 <= len(reply.elements) <= 2 and f"{len(reply.elements)} passages" in answer
    assert "Unknown model" in bad.messages[-1]["output"] and still == MODEL_B


def test_history_is_kept_and_sent(chat_app):
    async def scenario():
        chat = ChatSession()
        await chat.start()
        await chat.update_settings({"model": MODEL_A, "top_k": 2, "temperature": 0.0})
        await chat.send("What is a virtual environment?")
        await chat.send("And how do I activate it?")
        return await chat.state("history")

    history = run(scenario())
    assert [t.question for t in history] == ["What is a virtual environment?", "And how do I activate it?"]
    assert all(t.answer for t in history)


def test_retriever_down_gives_a_message_and_the_chat_keeps_working(chat_app, monkeypatch, retriever):
    from frontend.clients import RetrieverClient

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"retriever_url": dead}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        down = await chat.send(QUESTION)
        # the retriever comes back: the same chat answers again
        good = chat_app.SETTINGS.model_copy(update={"retriever_url": retriever.url})
        await chat.set_state("retriever", RetrieverClient(good))
        back = await chat.send(QUESTION)
        return down, back

    down, back = run(scenario())
    _no_traceback(down)
    assert [e["output"] for e in down.errors] == [
        "The document search service is not reachable right now. Please try again in a moment."
    ]
    assert not down.tokens and not down.elements
    assert not back.errors and back.tokens and back.elements


def test_llm_down_gives_a_message(chat_app, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_url": dead}))

    async def scenario():
        chat = ChatSession()
        start = await chat.start()
        await chat.set_state("model", MODEL_A)
        return start, await chat.send(QUESTION)

    start, reply = run(scenario())
    assert "language model service is not reachable" in start.messages[0]["output"]
    assert reply.errors and "language model service is not reachable" in reply.errors[-1]["output"]
    _no_traceback(reply)


def test_llm_busy_retries_then_answers(chat_app, monkeypatch, standin):
    """Stand-in at the LLM boundary: two 429s, then the real LLM answers; the chat shows a busy status meanwhile."""
    standin.busy = 2
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_url": standin.url, "busy_retries": 3}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        return await chat.send(QUESTION)

    reply = run(scenario())
    busy = [s for s in reply.steps if "model is busy" in str(s.get("output"))]
    assert busy and "retry 1 of 3" in busy[0]["output"] and any("retry 2 of 3" in s["output"] for s in busy)
    assert {s["id"] for s in busy} <= {d["id"] for d in reply.of("delete_step")}, "busy status not cleared"
    assert not reply.errors and reply.tokens and reply.elements
    assert standin.chat_requests == 3


def test_empty_sampled_answer_is_retried_greedily(chat_app, monkeypatch, standin):
    """Stand-in at the LLM boundary: the first answer comes back empty (as the real 135M model's sometimes does at
    temperature 0.7); the chat asks once more at temperature 0 and the real LLM's answer is shown."""
    standin.empty = 1
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_url": standin.url}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        await chat.set_state("temperature", 0.7)
        return await chat.send(QUESTION)

    reply = run(scenario())
    assert standin.chat_requests == 2
    assert [b["temperature"] for b in standin.chat_bodies] == [0.7, 0.0]
    assert standin.chat_bodies[0]["messages"] == standin.chat_bodies[1]["messages"]
    assert not reply.errors and len(reply.streamed) == 1
    streamed_text = (reply.streamed[0]["output"] + "".join(reply.tokens)).strip()
    answer = reply.messages[-1]["output"]
    assert streamed_text and answer.startswith(streamed_text) and "empty answer" not in answer


def test_llm_busy_gives_up_after_bounded_retries(chat_app, monkeypatch, standin):
    """Stand-in at the LLM boundary: always 429. The chat retries busy_retries times, then says it is busy."""
    standin.always_busy = True
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_url": standin.url, "busy_retries": 2}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        busy = await chat.send(QUESTION)
        standin.always_busy = False
        again = await chat.send(QUESTION)
        return busy, again

    busy, again = run(scenario())
    assert standin.chat_requests == 3 + 1
    assert busy.errors and "busy" in busy.errors[-1]["output"] and "2 retries" in busy.errors[-1]["output"]
    _no_traceback(busy)
    assert not again.errors and again.tokens


def test_model_not_ready_gives_a_message(chat_app, monkeypatch, standin):
    """Stand-in at the LLM boundary: 503 (model loading)."""
    standin.always_busy, standin.status = True, 503
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_url": standin.url}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        return await chat.send(QUESTION)

    reply = run(scenario())
    assert reply.errors and "not ready yet" in reply.errors[-1]["output"]
    assert standin.chat_requests == 1, "a 503 must not be retried like a 429"


def test_llm_timeout_gives_a_message(chat_app, monkeypatch, standin):
    """Stand-in at the LLM boundary: answers later than the chat's time limit."""
    standin.delay_s = 3.0
    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(update={"llm_url": standin.url, "llm_timeout_s": 0.5}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        return await chat.send(QUESTION)

    reply = run(scenario())
    assert reply.errors and "did not answer within 0.5 s" in reply.errors[-1]["output"]


@pytest.mark.slow
def test_real_queue_full_shows_busy(catalog_file, retriever, monkeypatch):
    """A real LLM predictor with no wait queue (--max_queue 0) answers 429 while it generates for someone else."""
    from frontend import app
    from frontend.settings import load_settings

    server = start_llm(catalog_file, "--max_queue", "0", "--preload", MODEL_A)
    try:
        settings = load_settings(retriever_url=retriever.url, llm_url=server.url, busy_retries=1, busy_max_wait_s=0.2)
        monkeypatch.setattr(app, "SETTINGS", settings)

        async def scenario():
            chat = ChatSession()
            await chat.start()
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                body = {"model": MODEL_A, "stream": True, "max_tokens": 400, "temperature": 0.8, "seed": 7,
                        "messages": [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]}
                async with http.stream("POST", "/openai/v1/chat/completions", json=body) as blocker:
                    lines = blocker.aiter_lines()
                    while not (await lines.__anext__()).startswith("data: {"):
                        pass
                    reply = await chat.send(QUESTION)
                    async for _ in lines:
                        pass
            return reply

        reply = run(scenario())
    finally:
        server.stop()
    assert any("model is busy" in str(s.get("output")) for s in reply.steps)
    assert reply.errors and "busy" in reply.errors[-1]["output"]


def test_no_secret_reaches_the_browser(chat_app, monkeypatch):
    """API keys and the login password stay server-side: nothing emitted to the browser contains them."""
    from pydantic import SecretStr

    monkeypatch.setattr(chat_app, "SETTINGS", chat_app.SETTINGS.model_copy(
        update={"llm_api_key": SecretStr(SECRET_KEY), "retriever_api_key": SecretStr(SECRET_KEY),
                "auth_password": SecretStr(SECRET_KEY)}))

    async def scenario():
        chat = ChatSession()
        await chat.start()
        await chat.update_settings({"model": MODEL_A, "top_k": 2, "temperature": 0.0})
        await chat.send(QUESTION)
        return chat

    chat = run(scenario())
    dumped = json.dumps(chat.emitter.events, default=str)
    assert "passages" in dumped and SECRET_KEY not in dumped
    assert SECRET_KEY not in repr(chat_app.SETTINGS)


def test_empty_message_is_answered_politely(chat_app):
    async def scenario():
        chat = ChatSession()
        await chat.start()
        return await chat.send("   ")

    reply = run(scenario())
    assert reply.messages[-1]["output"] == "Please type a question." and not reply.tokens


def test_starters_come_from_settings(chat_app):
    starters = asyncio.run(chat_app.starters())
    assert [s.label for s in starters] == [s.label for s in chat_app.SETTINGS.starters]
    assert all(re.search(r"\?$", s.message) for s in starters)

"""Building the RAG prompt: retrieved passages inside a delimited context block, trimmed to the model's window.

The template comes from ``rag_prompt.yaml`` (:class:`PromptTemplate`). :func:`build_prompt` turns a question, the
retrieved :class:`Passage` list and the earlier turns into OpenAI chat messages whose estimated size plus
``max_tokens`` fits the chosen model's context window, so the LLM never rejects a request for being too long.

Token counts use :func:`estimate_tokens`, a deliberately pessimistic count (it over-counts real BPE tokenizers such
as SmolLM2's and Gemma's; the tests check it against the real SmolLM2 tokenizer). A caller may pass any other
``counter``, e.g. a real tokenizer's ``len(tokenize(text))``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TokenCounter = Callable[[str], int]

#: tokens a chat template adds around each message (ChatML: ``<|im_start|>role\n`` ... ``<|im_end|>\n``)
MESSAGE_OVERHEAD_TOKENS = 8

_CASE_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[A-Z]")
_PIECES = re.compile(r"[A-Za-z]+|[0-9]|\s+|[\x21-\x7e]|[^\x00-\x7f]")
# Tags of the context block; retrieved text must not be able to open or close them.
_TAG_RE = re.compile(r"<\s*(/?)\s*(context|source)\b", re.IGNORECASE)


class PromptError(ValueError):
    """The prompt template is invalid; the message names the field."""


class PromptTooLongError(ValueError):
    """The question alone does not fit the model's window."""

    def __init__(self, tokens: int, window: int, model: str | None = None):
        self.tokens, self.window, self.model = tokens, window, model
        super().__init__(
            f"the message is about {tokens} tokens; model {model or '(default)'} reads at most {window} "
            "tokens including its answer"
        )


def estimate_tokens(text: str) -> int:
    """A pessimistic token count for ``text``.

    Letter runs count one token per 4 letters, split where the case changes up (``SmolLM`` is ``Smol`` + ``LM``);
    every digit and punctuation mark is one token (SmolLM2 splits digits); a single space is free (BPE merges it into
    the next word) but longer whitespace runs and line breaks are one; every non-ASCII character is two.
    """
    count = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isascii() and first.isalpha():
            count += sum(math.ceil(len(part) / 4) for part in _CASE_PARTS.findall(piece))
        elif piece == " ":
            continue
        elif first.isascii():
            count += 1
        else:
            count += 2
    return count


def messages_tokens(messages: Sequence[dict[str, str]], counter: TokenCounter = estimate_tokens) -> int:
    """Estimated tokens of a chat, template overhead included (plus the assistant header the model starts from)."""
    return sum(counter(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + MESSAGE_OVERHEAD_TOKENS


# -- the template -----------------------------------------------------------------------------------------------


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name}


class ContextTemplate(BaseModel):
    """How passages are rendered into the delimited context block."""

    model_config = ConfigDict(extra="forbid")

    passage: str = Field(..., description="One passage; fields {index} {document} {page} {heading} {score} {text}.")
    separator: str = Field("\n\n", description="Between two passages.")
    block: str = Field(..., description="The whole block; field {passages}. Must open and close a <context> tag.")
    empty: str = Field("(no passages were found)", description="The block's content when nothing was retrieved.")

    @field_validator("passage")
    @classmethod
    def _passage_fields(cls, value: str) -> str:
        allowed = {"index", "document", "page", "heading", "score", "text"}
        if unknown := _fields(value) - allowed:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "text" not in _fields(value):
            raise ValueError("must contain {text}")
        return value

    @field_validator("block")
    @classmethod
    def _block_fields(cls, value: str) -> str:
        if _fields(value) != {"passages"}:
            raise ValueError("must contain exactly the placeholder {passages}")
        if "<context>" not in value or "</context>" not in value:
            raise ValueError("must delimit the passages with <context> ... </context>")
        return value


class RetrievalDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(10, ge=1, le=100, description="Passages asked from the retriever.")


class GenerationParams(BaseModel):
    """Sampling parameters sent with every chat completion."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, le=8192, description="Tokens the answer may take.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus-sampling mass.")
    stop: list[str] = Field(default_factory=list, max_length=8, description="Stop sequences.")


class BudgetRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    safety_tokens: int = Field(48, ge=0, le=4096, description="Head-room kept free in the window.")
    history_share: float = Field(0.25, ge=0.0, le=0.9, description="Largest share of the free window for history.")
    min_answer_tokens: int = Field(32, ge=1, le=1024, description="max_tokens is never lowered below this.")


class PromptTemplate(BaseModel):
    """The whole ``rag_prompt.yaml``."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    system: str = Field(..., min_length=1, description="The system message.")
    context: ContextTemplate
    question: str = Field(..., description="The last user message; fields {context} and {question}.")
    retrieval: RetrievalDefaults = Field(default_factory=RetrievalDefaults)
    generation: GenerationParams = Field(default_factory=GenerationParams)
    budget: BudgetRules = Field(default_factory=BudgetRules)

    @field_validator("question")
    @classmethod
    def _question_fields(cls, value: str) -> str:
        if _fields(value) != {"context", "question"}:
            raise ValueError("must contain exactly the placeholders {context} and {question}")
        return value

    @classmethod
    def load(cls, path: str | Path) -> "PromptTemplate":
        """Read and validate a template file; :class:`PromptError` names the file and the bad field."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PromptError(f"prompt template {path} is unreadable: {exc}") from exc
        except yaml.YAMLError as exc:
            raise PromptError(f"prompt template {path} is not valid YAML: {exc}") from exc
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
            raise PromptError(f"prompt template {path} is invalid: {bad}") from exc


# -- passages and turns -----------------------------------------------------------------------------------------


class Passage(BaseModel):
    """One retrieved chunk, as the retriever predictor returns it."""

    model_config = ConfigDict(extra="ignore")

    chunk_id: str = Field(..., description="Stable id of the chunk in the index.")
    text: str = Field(..., description="The chunk's text.")
    score: float = Field(..., description="Similarity to the query (higher is closer).")
    source: str = Field(..., description="The document the chunk comes from.")
    pages: list[int] = Field(default_factory=list, description="Pages the chunk spans (empty for page-less formats).")
    headings: list[str] = Field(default_factory=list, description="Section headings above the chunk.")
    chunk_index: int = Field(0, ge=0, description="Position of the chunk in its document.")

    @field_validator("chunk_id", mode="before")
    @classmethod
    def _as_str(cls, value: Any) -> str:
        return str(value)

    @property
    def document(self) -> str:
        """The document's file name (sources may be paths or URLs)."""
        return re.split(r"[\\/]", self.source.rstrip("/\\"))[-1] or self.source

    @property
    def page_label(self) -> str:
        if not self.pages:
            return ""
        lo, hi = min(self.pages), max(self.pages)
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def heading(self) -> str:
        return " / ".join(h for h in self.headings if h)


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of the conversation."""

    question: str
    answer: str


@dataclass
class BuiltPrompt:
    """What :func:`build_prompt` produced: the messages and what went into them."""

    messages: list[dict[str, str]]
    passages: list[Passage]
    max_tokens: int
    prompt_tokens: int
    window: int
    dropped_passages: int = 0
    history_turns: int = 0
    dropped_turns: int = 0
    truncated_passage: bool = False
    notes: list[str] = field(default_factory=list)


def _attr(value: str) -> str:
    """A value safe inside a double-quoted tag attribute on one line."""
    return re.sub(r"\s+", " ", value).replace('"', "'").replace("<", "(").replace(">", ")").strip()


def neutralize(text: str) -> str:
    """Retrieved text with every ``<context``/``<source`` tag (opening or closing) defused.

    A document that contains ``</context>`` can then not end the block early and smuggle instructions after it.
    """
    return _TAG_RE.sub(lambda m: f"‹{m.group(1)}{m.group(2)}", text)


def render_passage(template: PromptTemplate, index: int, passage: Passage, text: str | None = None) -> str:
    return template.context.passage.format(
        index=index,
        document=_attr(passage.document),
        page=_attr(passage.page_label),
        heading=_attr(passage.heading),
        score=f"{passage.score:.3f}",
        text=neutralize(passage.text if text is None else text).strip(),
    )


def render_context(template: PromptTemplate, rendered_passages: Sequence[str]) -> str:
    inner = template.context.separator.join(rendered_passages) if rendered_passages else template.context.empty
    return template.context.block.format(passages=inner)


def _cut(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters, marked with an ellipsis when shortened."""
    return text if length >= len(text) else text[:length].rstrip() + " …"


def build_prompt(
    template: PromptTemplate,
    question: str,
    passages: Sequence[Passage],
    history: Sequence[Turn] = (),
    *,
    window: int,
    max_tokens: int | None = None,
    counter: TokenCounter = estimate_tokens,
    model: str | None = None,
) -> BuiltPrompt:
    """Chat messages for ``question`` whose estimated size + ``max_tokens`` fits ``window``.

    Priority when the window is short: the system prompt and the question always stay (else
    :class:`PromptTooLongError`); then passages in rank order (the first is cut to fit rather than dropped);
    then earlier turns, newest first, within ``budget.history_share`` of what is left unless passages leave room.
    ``max_tokens`` is lowered (down to ``budget.min_answer_tokens``) only when even the bare question needs it.
    """
    rules = template.budget
    answer_tokens = max_tokens if max_tokens is not None else template.generation.max_tokens
    system = {"role": "system", "content": template.system}

    def final_user(context: str) -> dict[str, str]:
        return {"role": "user", "content": template.question.format(context=context, question=question.strip())}

    bare = [system, final_user(render_context(template, []))]
    required = messages_tokens(bare, counter)
    notes: list[str] = []
    if required + answer_tokens + rules.safety_tokens > window:
        lowered = window - required - rules.safety_tokens
        if lowered < rules.min_answer_tokens:
            raise PromptTooLongError(required + rules.min_answer_tokens + rules.safety_tokens, window, model)
        notes.append(f"max_tokens lowered from {answer_tokens} to {lowered} to fit the window")
        answer_tokens = lowered
    free = window - answer_tokens - rules.safety_tokens - required

    history_tokens = [counter(t.question) + counter(t.answer) + 2 * MESSAGE_OVERHEAD_TOKENS for t in history]
    history_reserve = min(sum(history_tokens), int(free * rules.history_share))

    # Passages, in rank order, while the whole last message stays within what history's reserve leaves.
    passage_limit = window - answer_tokens - rules.safety_tokens - history_reserve

    def last_message_cost(pieces: list[str]) -> int:
        return messages_tokens([system, final_user(render_context(template, pieces))], counter)

    kept: list[Passage] = []
    rendered: list[str] = []
    truncated = False
    for passage in passages:
        piece = render_passage(template, len(kept) + 1, passage)
        if last_message_cost(rendered + [piece]) <= passage_limit:
            kept.append(passage)
            rendered.append(piece)
            continue
        if not kept:
            # The best passage alone is too long: keep its longest prefix that fits.
            clean = passage.text.strip()
            lo, hi = 0, len(clean)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                trial = render_passage(template, 1, passage, text=_cut(clean, mid))
                if last_message_cost([trial]) <= passage_limit:
                    lo = mid
                else:
                    hi = mid - 1
            if lo > 0:
                kept.append(passage)
                rendered.append(render_passage(template, 1, passage, text=_cut(clean, lo)))
                truncated = True
        break
    last = final_user(render_context(template, rendered))
    used_now = messages_tokens([system, last], counter)
    history_budget = window - answer_tokens - rules.safety_tokens - used_now

    # Earlier turns, newest first, while they fit (whatever passages left over is theirs too).
    chosen: list[Turn] = []
    spent = 0
    for turn, cost in zip(reversed(history), reversed(history_tokens)):
        if spent + cost > history_budget:
            break
        chosen.append(turn)
        spent += cost
    chosen.reverse()

    messages = [system]
    for turn in chosen:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer})
    messages.append(last)
    prompt_tokens = messages_tokens(messages, counter)
    if prompt_tokens + answer_tokens > window:  # cannot happen: every part above was counted before it was added
        raise PromptTooLongError(prompt_tokens + answer_tokens, window, model)
    return BuiltPrompt(
        messages=messages,
        passages=kept,
        max_tokens=answer_tokens,
        prompt_tokens=prompt_tokens,
        window=window,
        dropped_passages=len(passages) - len(kept),
        history_turns=len(chosen),
        dropped_turns=len(history) - len(chosen),
        truncated_passage=truncated,
        notes=notes,
    )

"""One loaded GGUF model: llama-cpp-python, the GGUF's own chat template, and a token-by-token generation loop.

Everything here runs on the predictor's single llama thread (see :mod:`serving.llm.service`): a llama.cpp context
does one thing at a time. The loop checks a cancel flag and a deadline between prompt batches and after every
token, so a disconnected client or a request over its time limit frees the model within one token's time.
"""

from __future__ import annotations

import codecs
import ctypes
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from serving.llm.catalog import CatalogEntry

# Sampler settings that OpenAI requests have no field for: llama.cpp's defaults, shared with the benchmark.
TOP_K = 40
MIN_P = 0.05


@dataclass(frozen=True)
class SamplingParams:
    """Resolved generation parameters of one request (request values over catalog defaults)."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass
class GenerationOutcome:
    """How a generation ended, with its token counts and timings (monotonic seconds)."""

    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    started: float
    first_token_at: float | None = None
    finished: float = 0.0
    timed_out: bool = False

    @property
    def decode_tokens_per_s(self) -> float | None:
        if self.first_token_at is None or self.completion_tokens < 2 or self.finished <= self.first_token_at:
            return None
        return (self.completion_tokens - 1) / (self.finished - self.first_token_at)


class StopMatcher:
    """Cuts streamed text at the first stop sequence, holding back a tail that may be the start of one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop sequence was hit)."""
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[: min(hits)], True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        self._held = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out


class ChatTemplateMissing(ValueError):
    """The GGUF has no chat template and the catalog entry gives none."""


@dataclass
class LlamaEngine:
    """A loaded catalog model. Build with :meth:`load`; call :meth:`close` to free it."""

    entry: CatalogEntry
    path: Path
    size_bytes: int
    llm: llama_cpp.Llama
    reuse_prefix: bool = False
    _formatter: Jinja2ChatFormatter | None = field(default=None, repr=False)
    _piece_buf: ctypes.Array = field(default_factory=lambda: ctypes.create_string_buffer(64), repr=False)

    @classmethod
    def load(
        cls, entry: CatalogEntry, path: Path, *, n_threads: int, n_batch: int, reuse_prefix: bool = False
    ) -> "LlamaEngine":
        """Load ``path`` (already resolved and sha256-verified by the caller) with the entry's context size.

        ``reuse_prefix`` keeps the KV cache of a prompt prefix shared with the previous generation: faster for
        growing chats, but the logits then depend on what ran before, so a seeded sample is no longer repeatable.
        """
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=entry.context_size,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=min(n_batch, entry.context_size),
            verbose=False,
        )
        template = entry.chat_template or llm.metadata.get("tokenizer.chat_template")
        formatter = None
        if template:
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=_token_text(llm, llm.token_eos()),
                bos_token=_token_text(llm, llm.token_bos()),
                add_generation_prompt=True,
            )
        return cls(
            entry=entry,
            path=path,
            size_bytes=path.stat().st_size,
            llm=llm,
            reuse_prefix=reuse_prefix,
            _formatter=formatter,
        )

    @property
    def context_size(self) -> int:
        return self.llm.n_ctx()

    @property
    def has_chat_template(self) -> bool:
        return self._formatter is not None

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Render ``messages`` with the model's own Jinja chat template, ending with the assistant's turn."""
        if self._formatter is None:
            raise ChatTemplateMissing(
                f"model {self.entry.name!r} has no chat template in its GGUF or catalog entry; use /completions"
            )
        return self._formatter(messages=messages).prompt

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``; special tokens written in it (``<|im_start|>``) are parsed as such.

        A BOS is added when the model wants one and the text does not already start with it.
        """
        bos_id = self.llm.token_bos()
        bos = _token_text(self.llm, bos_id)
        add_bos = self.llm._model.add_bos_token() and not (bos and text.startswith(bos))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def generate(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        *,
        emit: Callable[[str], None],
        cancel: threading.Event,
        deadline: float,
        started: float | None = None,
    ) -> GenerationOutcome:
        """Generate up to ``params.max_tokens`` tokens after ``prompt_tokens``, calling ``emit`` with text pieces.

        Stops at an end-of-generation token or stop sequence ("stop"), at max_tokens or the deadline ("length"),
        or when ``cancel`` is set ("cancelled"). Emitted text never contains a stop sequence.
        """
        llm = self.llm
        outcome = GenerationOutcome("length", len(prompt_tokens), 0, started or time.monotonic())
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        if not self.reuse_prefix:
            llm.reset()  # same prompt + seed -> same evaluation -> same text, whatever ran before
        if not self._eval_prompt_prefix(prompt_tokens, cancel, deadline):
            outcome.finish_reason = "cancelled" if cancel.is_set() else "length"
            outcome.timed_out = not cancel.is_set()
            outcome.finished = time.monotonic()
            return outcome

        vocab = llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stopper = StopMatcher(params.stop)
        tokens = llm.generate(
            prompt_tokens,
            top_k=TOP_K,
            top_p=params.top_p,
            min_p=MIN_P,
            temp=params.temperature,
            repeat_penalty=1.0,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
        )
        stopped_by_sequence = False
        try:
            for token in tokens:
                if outcome.first_token_at is None:
                    outcome.first_token_at = time.monotonic()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    outcome.finish_reason = "stop"
                    break
                outcome.completion_tokens += 1
                text, hit = stopper.feed(decoder.decode(self._piece(vocab, token)))
                if text:
                    emit(text)
                if hit:
                    outcome.finish_reason = "stop"
                    stopped_by_sequence = True
                    break
                if outcome.completion_tokens >= params.max_tokens:
                    break
                if cancel.is_set():
                    outcome.finish_reason = "cancelled"
                    break
                if time.monotonic() >= deadline:
                    outcome.timed_out = True
                    break
        finally:
            tokens.close()
        if not stopped_by_sequence and outcome.finish_reason != "cancelled":
            tail = stopper.flush() + decoder.decode(b"", final=True)
            if tail:
                emit(tail)
        outcome.finished = time.monotonic()
        return outcome

    def _piece(self, vocab: object, token: int) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character); grows the buffer for long pieces."""
        n = llama_cpp.llama_token_to_piece(vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        if n < 0:
            self._piece_buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        return self._piece_buf.raw[:n]

    def _eval_prompt_prefix(self, prompt_tokens: list[int], cancel: threading.Event, deadline: float) -> bool:
        """Evaluate a long prompt's head in batches, reusing the KV cache's common prefix.

        ``Llama.generate`` evaluates the whole prompt in one uninterruptible call; for prompts longer than a batch,
        the head is evaluated here batch by batch so a cancel or the deadline can stop it, and ``generate`` finds it
        cached and evaluates only the last batch. A prompt of one batch is left to ``generate`` alone (one decode
        call, as in-process use would do). Returns False when stopped early.
        """
        llm = self.llm
        head = len(prompt_tokens) - llm.n_batch
        if head <= 0:
            return True
        target = prompt_tokens[:head]
        cached = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, target):
            if a != b:
                break
            common += 1
        llm.n_tokens = common  # Llama.eval drops the KV cache beyond n_tokens before it decodes
        for start in range(common, len(target), llm.n_batch):
            if cancel.is_set() or time.monotonic() >= deadline:
                return False
            llm.eval(target[start : start + llm.n_batch])
        return True

    def close(self) -> None:
        self.llm.close()


def _token_text(llm: llama_cpp.Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm._model.token_get_text(token)

"""The engine (real llama.cpp on the packaged GGUF), the stop-sequence matcher and the queue, in-process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.llm.catalog import Catalog
from serving.llm.engine import LlamaEngine, SamplingParams, StopMatcher
from serving.llm.errors import QueueFull, QueueTimeout
from serving.llm.service import Scheduler
from tests.serving.llm.conftest import DEFAULT_CATALOG, MODEL


@pytest.fixture(scope="module")
def engine(gguf_path):
    entry = Catalog.load(DEFAULT_CATALOG).get(MODEL)
    eng = LlamaEngine.load(entry, gguf_path, n_threads=1, n_batch=64)
    yield eng
    eng.close()


def _run(engine, prompt: str, params: SamplingParams, *, cancel_after: int | None = None, deadline_s: float = 60):
    pieces: list[str] = []
    cancel = threading.Event()

    def emit(text: str) -> None:
        pieces.append(text)
        if cancel_after is not None and len(pieces) >= cancel_after:
            cancel.set()

    tokens = engine.tokenize(engine.chat_prompt([{"role": "user", "content": prompt}]))
    outcome = engine.generate(tokens, params, emit=emit, cancel=cancel, deadline=time.monotonic() + deadline_s)
    return "".join(pieces), outcome


def test_chat_prompt_uses_the_gguf_template(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<|im_start|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    tokens = engine.tokenize(prompt)
    assert tokens[0] == engine.llm.token_bos()  # <|im_start|> parsed as one special token, no second BOS


def test_greedy_generation_is_deterministic_and_counts_tokens(engine):
    params = SamplingParams(max_tokens=10, temperature=0.0, top_p=1.0, seed=1)
    first, outcome = _run(engine, "Count from one to ten.", params)
    second, _ = _run(engine, "Count from one to ten.", params)
    assert first and first == second
    assert outcome.completion_tokens <= 10
    assert outcome.first_token_at is not None and outcome.decode_tokens_per_s is None or outcome.decode_tokens_per_s > 0


def test_cancel_stops_within_a_token(engine):
    params = SamplingParams(max_tokens=500, temperature=0.8, top_p=0.95, seed=2)
    _, outcome = _run(engine, "Write a long story.", params, cancel_after=3)
    assert outcome.finish_reason == "cancelled"
    assert outcome.completion_tokens <= 4


def test_deadline_ends_generation_as_length(engine):
    params = SamplingParams(max_tokens=500, temperature=0.8, top_p=0.95, seed=3)
    _, outcome = _run(engine, "Write a long story.", params, deadline_s=0.3)
    assert outcome.finish_reason == "length" and outcome.timed_out
    assert outcome.completion_tokens < 500


def test_long_prompt_prefix_is_evaluated_in_cancellable_batches(engine):
    cancel = threading.Event()
    cancel.set()
    tokens = engine.tokenize(engine.chat_prompt([{"role": "user", "content": "word " * 600}]))
    started = time.monotonic()
    outcome = engine.generate(
        tokens,
        SamplingParams(max_tokens=5, temperature=0, top_p=1),
        emit=lambda _: None,
        cancel=cancel,
        deadline=time.monotonic() + 60,
    )
    assert outcome.finish_reason == "cancelled" and outcome.completion_tokens == 0
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    "stops,pieces,emitted,hit",
    [
        (("END",), ["abc", "EN", "D tail"], "abc", True),
        (("END",), ["abc", "EN", "X"], "abcENX", False),
        (("\n\n", "##"), ["a\n", "b#", "#c"], "a\nb", True),
        ((), ["a", "b"], "ab", False),
    ],
)
def test_stop_matcher(stops, pieces, emitted, hit):
    matcher = StopMatcher(stops)
    out, was_hit = "", False
    for piece in pieces:
        text, was_hit = matcher.feed(piece)
        out += text
        if was_hit:
            break
    if not was_hit:
        out += matcher.flush()
    assert (out, was_hit) == (emitted, hit)


def test_scheduler_queue_full_timeout_and_fifo_handover():
    async def scenario() -> None:
        scheduler = Scheduler(max_queue=2, timeout_s=0.3)
        await scheduler.acquire()  # running
        order: list[int] = []

        async def waiter(i: int) -> None:
            await scheduler.acquire()
            order.append(i)
            scheduler.release()

        tasks = [asyncio.create_task(waiter(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        assert scheduler.waiting == 2
        with pytest.raises(QueueFull) as full:
            await scheduler.acquire()
        assert full.value.status == 429 and full.value.retry_after_s >= 1
        scheduler.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1] and not scheduler.busy

        await scheduler.acquire()
        with pytest.raises(QueueTimeout) as late:
            await scheduler.acquire()
        assert late.value.status == 503 and scheduler.waiting == 0
        scheduler.release()
        assert not scheduler.busy

    asyncio.run(scenario())

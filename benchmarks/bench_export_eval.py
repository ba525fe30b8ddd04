"""Benchmark: GGUF export time per quantization and perplexity-evaluation time (HF vs llama.cpp), on CPU.

Model: SmolLM2-135M-Instruct (the packaged GGUF, dequantized to a float32 HF folder, i.e. what a CPU training run
merges to). Data: held-out ShareGPT conversations from the data step. Ratios are printed against the conversion
step (quantization) and against transformers scoring the same tokens (llama.cpp evaluation), measured in this run.

    .venv/bin/python benchmarks/bench_export_eval.py [--examples 8] [--max-length 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8, help="held-out conversations to score")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per conversation")
    parser.add_argument("--quants", default="q4_k_m,q8_0,q2_k", help="comma-separated quantizations")
    args = parser.parse_args()

    import torch

    from components.data.prepare import DataConfig, prepare_dataset
    from components.evaluate.evaluate import read_heldout
    from components.evaluate.perplexity import encode_examples, gguf_scores, hf_scores
    from components.export.config import ExportConfig
    from components.export.gguf_export import export_model
    from components.train.base_model import default_base_model, load_base_model

    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        prepare_dataset(DataConfig(max_examples=args.examples + 10, heldout_size=args.examples, seed=1), root / "d")
        model, tokenizer = load_base_model(default_base_model(), dtype=torch.float32)
        model.save_pretrained(root / "hf", safe_serialization=True)
        tokenizer.save_pretrained(root / "hf")

        quants = [q.strip() for q in args.quants.split(",") if q.strip()]
        t0 = time.perf_counter()
        result = export_model(ExportConfig(model_id="bench", quant_types=quants), root / "hf", root / "gguf")
        export_total = time.perf_counter() - t0

        examples = encode_examples(tokenizer, read_heldout(root / "d", args.examples), args.max_length)
        n_tokens = sum(len(e.input_ids) for e in examples)
        t0 = time.perf_counter()
        hf_ppl = hf_scores(model, examples).perplexity()
        hf_s = time.perf_counter() - t0
        rows = []
        for f in result.files:
            t0 = time.perf_counter()
            ppl = gguf_scores(result.gguf(f.quant), examples, n_threads=threads).perplexity()
            rows.append((f, ppl, time.perf_counter() - t0))

    print(f"# export + eval benchmark: SmolLM2-135M, {threads} threads, torch {torch.__version__}")
    print(f"convert-hf-to-gguf --outtype f16: {result.convert_seconds:.2f} s; whole export {export_total:.2f} s")
    print("| file | size MiB | quantize s | quantize / convert | eval s | eval tok/s | eval speed vs HF | ppl | ppl vs HF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| HF float32 (transformers) | - | - | - | {hf_s:.2f} | {n_tokens / hf_s:.0f} | 1.00x | {hf_ppl:.4f} | - |")
    for f, ppl, secs in rows:
        qs = f"{f.seconds:.2f}" if f.quant != "f16" else "(convert)"
        ratio = f"{f.seconds / result.convert_seconds:.3f}x" if f.quant != "f16" else "1.000x"
        print(f"| {f.quant} | {f.size / 2**20:.1f} | {qs} | {ratio} | {secs:.2f} | {n_tokens / secs:.0f} | "
              f"{hf_s / secs:.2f}x | {ppl:.4f} | {(ppl / hf_ppl - 1) * 100:+.2f}% |")
    print(f"({len(examples)} conversations, {n_tokens} tokens each pass)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

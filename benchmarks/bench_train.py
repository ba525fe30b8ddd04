"""CPU training throughput of the train component vs a bare trl SFTTrainer with the same config and data.

Baseline: ``trl.SFTTrainer`` given the model, a ``peft.LoraConfig`` and the ``messages`` dataset directly (trl
tokenizes with the chat template itself), same SFTConfig values. Measured: real (non-padding) tokens processed per
second of ``trainer.train()``, both sides timed the same way, alternating order over ``--rounds`` rounds; the best
round of each side is compared (the CPU is shared, so the best is the least disturbed). Target: ratio >= 0.95.

    .venv/bin/python benchmarks/bench_train.py [--steps 3] [--seq 128] [--examples 48] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def component_run(data_dir: Path, work: Path, args: argparse.Namespace, round_no: int) -> dict:
    from components.train.config import TrainConfig
    from components.train.trainer import train

    cfg = TrainConfig(
        max_steps=args.steps, max_seq_length=args.seq, per_device_train_batch_size=2, gradient_accumulation_steps=4,
        warmup_steps=1, save_steps=10_000, resume=False, checkpoint_location=str(work / "ckpt"),
        run_name=f"bench-{round_no}",
    )
    result = train(cfg, data_dir, work / f"out-{round_no}")
    rep = result.report
    return {"tokens": rep["train_tokens"], "seconds": rep["train_seconds"], "tokens_per_s": rep["tokens_per_second"]}


def baseline_run(data_dir: Path, work: Path, args: argparse.Namespace, round_no: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from components.data.prepare import load_split
    from components.train.base_model import load_base_model
    from components.train.config import DEFAULT_TARGET_MODULES

    model, tokenizer = load_base_model(None, dtype=torch.float32)
    rows = [{"messages": m} for m in load_split(data_dir)]
    sft = SFTConfig(
        output_dir=str(work / f"baseline-{round_no}"), max_steps=args.steps, max_length=args.seq,
        per_device_train_batch_size=2, gradient_accumulation_steps=4, learning_rate=2e-4, lr_scheduler_type="linear",
        warmup_steps=1, weight_decay=0.001, optim="adamw_torch", seed=3407, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, disable_tqdm=True,
        # The component's CPU runtime trains without gradient checkpointing (components/train/backends.py: only on
        # CUDA by default); trl's SFTConfig defaults it to on, which recomputes activations and is ~1.4x slower.
        gradient_checkpointing=False,
    )
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=DEFAULT_TARGET_MODULES, bias="none",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora)
    from components.train.trainer import TokenCounter

    counter = TokenCounter(trainer.model)  # the same counting as the component's report
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    counter.close()
    seen = {"tokens": counter.tokens}
    return {"tokens": seen["tokens"], "seconds": round(seconds, 3), "tokens_per_s": seen["tokens"] / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run (batch 2 x grad-accum 4)")
    parser.add_argument("--seq", type=int, default=128, help="max_seq_length")
    parser.add_argument("--examples", type=int, default=48, help="ShareGPT conversations to train on")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of (baseline, component)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    from components.data.prepare import DataConfig, prepare_dataset

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        prepare_dataset(DataConfig(max_examples=args.examples + 2, heldout_size=2), work / "data")
        runs = {"baseline": [], "component": []}
        for r in range(args.rounds):
            order = ("baseline", "component") if r % 2 == 0 else ("component", "baseline")
            for side in order:
                fn = baseline_run if side == "baseline" else component_run
                res = fn(work / "data", work, args, r)
                runs[side].append(res)
                print(f"round {r} {side:9s}: {res['tokens']:6d} tokens in {res['seconds']:7.2f} s = "
                      f"{res['tokens_per_s']:8.1f} tokens/s", flush=True)
        best = {side: max(x["tokens_per_s"] for x in rs) for side, rs in runs.items()}
        ratio = best["component"] / best["baseline"]
        print(f"train component vs bare trl SFTTrainer (CPU, {torch.get_num_threads()} threads, seq {args.seq}, "
              f"batch 2 x 4, {args.steps} steps): {best['component']:.1f} vs {best['baseline']:.1f} tokens/s "
              f"= {ratio:.3f}x (target >= 0.95x) {'OK' if ratio >= 0.95 else 'BELOW TARGET'}")
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": runs, "best": best, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

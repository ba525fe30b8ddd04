#!/usr/bin/env bash
# GPU smoke test of the train component: run the unsloth backend and the hf backend (bitsandbytes QLoRA: NF4 +
# double quantization, adamw_8bit) for a few steps on the same model and data, then print tokens/s and peak GPU
# memory of each and the unsloth / hf speed ratio (the issue's target: unsloth >= 1.8x).
#
# Needs a CUDA GPU and an environment with torch (CUDA), unsloth, bitsandbytes, transformers, trl, peft, datasets
# and this repo's packages (the ragtune-train image has them). Offline by default: the base model is the packaged
# SmolLM2-135M GGUF and the data the packaged ShareGPT file.
#
#   scripts/gpu_smoke.sh                      # defaults below
#   STEPS=20 SEQ=2048 BASE_MODEL=unsloth/Meta-Llama-3.1-8B-Instruct HF_HUB_OFFLINE=0 scripts/gpu_smoke.sh
set -euo pipefail

PY="${PYTHON:-python}"
STEPS="${STEPS:-10}"
SEQ="${SEQ:-1024}"
EXAMPLES="${EXAMPLES:-400}"
BASE_MODEL="${BASE_MODEL:-}"
BACKENDS="${BACKENDS:-unsloth hf}"
WORK="${WORK:-$(mktemp -d -t ragtune-gpu-smoke-XXXXXX)}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
cd "$(dirname "$0")/.."

"$PY" - <<'PYEOF'
import importlib.util, sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_smoke: no CUDA GPU visible to torch; run this on a GPU machine")
missing = [m for m in ("unsloth", "bitsandbytes") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_smoke: missing packages: {', '.join(missing)} (use the ragtune-train image)")
p = torch.cuda.get_device_properties(0)
print(f"gpu_smoke: {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, "
      f"bf16={torch.cuda.is_bf16_supported()}")
PYEOF

echo "gpu_smoke: work dir $WORK"
"$PY" -m components.data --out "$WORK/data" --set "max_examples=$EXAMPLES" --set heldout_size=10 >/dev/null

for backend in $BACKENDS; do
  echo "gpu_smoke: backend=$backend steps=$STEPS max_seq_length=$SEQ"
  # Each backend in its own process: unsloth patches transformers/trl/peft at import.
  "$PY" -m components.train --data "$WORK/data" --out "$WORK/out-$backend" \
    --set "backend=$backend" --set load_in_4bit=true --set optim=adamw_8bit \
    --set "base_model=$BASE_MODEL" --set "max_steps=$STEPS" --set warmup_steps=2 \
    --set "max_seq_length=$SEQ" --set save_steps=100000 --set resume=false \
    --set "checkpoint_location=$WORK/ckpt-$backend" --set "run_name=gpu-smoke-$backend" >/dev/null
done

"$PY" - "$WORK" $BACKENDS <<'PYEOF'
import json, sys
from pathlib import Path
work, backends = Path(sys.argv[1]), sys.argv[2:]
rows = {}
for b in backends:
    r = json.loads((work / f"out-{b}" / "report.json").read_text())
    rows[b] = r
    print(f"{b:8s} backend={r['backend']:8s} steps={r['global_step']:4d} tokens/s={r['tokens_per_second']:10.1f} "
          f"peak_mem={r['peak_memory_bytes'] / 2**30:6.2f} GiB final_loss={r['final_loss']:.4f} "
          f"trainable={r['trainable_percent']:.3f}%")
if {"unsloth", "hf"} <= rows.keys():
    ratio = rows["unsloth"]["tokens_per_second"] / rows["hf"]["tokens_per_second"]
    mem = rows["unsloth"]["peak_memory_bytes"] / rows["hf"]["peak_memory_bytes"]
    print(f"unsloth/hf tokens/s ratio: {ratio:.2f}x (target >= 1.8x); peak memory ratio: {mem:.2f}x")
PYEOF

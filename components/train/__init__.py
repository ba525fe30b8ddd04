"""Train component: LoRA SFT (unsloth or transformers+peft+trl) with resumable checkpoints in a local or Hub store."""

"""Per-conversation negative log-likelihood of the assistant tokens, for HF models and GGUF files.

Both scorers take the same token ids and labels (from the training tokenizer's ``encode_chat``), so an HF model and
its GGUF quantizations are scored on exactly the same tokens. A label of -100 marks a token that is not scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

IGNORE = -100


@dataclass
class Encoded:
    """One tokenized conversation: ``labels[i]`` is ``input_ids[i]`` for assistant tokens, else -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_scored(self) -> int:
        """Assistant tokens that get a prediction (the first token has no context and is never scored)."""
        return sum(1 for lab in self.labels[1:] if lab != IGNORE)


@dataclass
class Scores:
    """Summed NLL (nats) and scored-token count per conversation; perplexity over any subset follows from these."""

    nll: np.ndarray
    tokens: np.ndarray

    def perplexity(self, index: np.ndarray | None = None) -> float:
        """exp(total NLL / total tokens) over all conversations, or over ``index`` (may repeat: bootstrap)."""
        nll = self.nll if index is None else self.nll[index]
        tok = self.tokens if index is None else self.tokens[index]
        total = float(tok.sum())
        if total == 0:
            raise ValueError("no assistant tokens to score")
        return float(np.exp(nll.sum() / total))


def _as_list(values: Any) -> list[int]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    if values and isinstance(values[0], list):  # a batch of one
        values = values[0]
    return [int(v) for v in values]


def encode_examples(tokenizer: Any, conversations: Iterable[list[dict[str, str]]], max_length: int,
                    chat_template: str | None = None) -> list[Encoded]:
    """Tokenize conversations with the training code's ``encode_chat``; drop those without assistant tokens."""
    from components.data.tokenize import encode_chat

    out = []
    for messages in conversations:
        enc = encode_chat(tokenizer, messages, max_length, chat_template=chat_template)
        item = Encoded(_as_list(enc["input_ids"]), _as_list(enc["labels"]))
        if item.n_scored:
            out.append(item)
    return out


def hf_scores(model: Any, examples: Sequence[Encoded], *, desc: str = "hf") -> Scores:
    """Score ``examples`` with a transformers causal LM (one conversation per forward pass, no padding)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    nll, tokens = np.zeros(len(examples)), np.zeros(len(examples), dtype=np.int64)
    with torch.inference_mode():
        for i, ex in enumerate(tqdm(examples, desc=f"ppl {desc}", unit="conv", leave=False)):
            ids = torch.tensor([ex.input_ids], device=device)
            labels = torch.tensor(ex.labels[1:], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
            nll[i] = float(loss)
            tokens[i] = int((labels != IGNORE).sum())
    return Scores(nll, tokens)


def gguf_scores(gguf_path: str | os.PathLike[str], examples: Sequence[Encoded], *, n_threads: int = 0,
                desc: str | None = None) -> Scores:
    """Score ``examples`` with llama.cpp: evaluate the token ids with ``logits_all`` and read the logits back."""
    import llama_cpp

    n_ctx = max(len(ex.input_ids) for ex in examples)
    llm = llama_cpp.Llama(
        model_path=str(gguf_path),
        n_ctx=max(n_ctx, 64),
        n_batch=max(n_ctx, 64),
        n_threads=n_threads or (os.cpu_count() or 1),
        logits_all=True,
        verbose=False,
    )
    try:
        vocab = llm.n_vocab()
        nll, tokens = np.zeros(len(examples)), np.zeros(len(examples), dtype=np.int64)
        for i, ex in enumerate(tqdm(examples, desc=f"ppl {desc or Path(gguf_path).name}", unit="conv", leave=False)):
            if max(ex.input_ids) >= vocab:
                raise ValueError(f"token id {max(ex.input_ids)} is outside the GGUF vocabulary ({vocab})")
            llm.reset()
            llm.eval(ex.input_ids)
            targets = np.asarray(ex.labels[1:])
            positions = np.nonzero(targets != IGNORE)[0]
            logits = np.asarray(llm.scores[positions], dtype=np.float64)
            peak = logits.max(axis=1, keepdims=True)
            logz = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
            nll[i] = float((logz - logits[np.arange(len(positions)), targets[positions]]).sum())
            tokens[i] = len(positions)
    finally:
        llm.close()
    return Scores(nll, tokens)

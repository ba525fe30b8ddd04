"""Tokenize a conversation with the model's own chat template, with loss on assistant tokens only.

:func:`encode_chat` renders ``messages`` through the chat template (ChatML for SmolLM2, Llama 3.1, Mistral, ...),
finds the character spans the template produced for each assistant turn, and labels exactly the tokens inside those
spans; every other token (system, user, role headers) gets label ``-100``. The assistant span runs from the end of
the rendered prompt (``add_generation_prompt=True``) to the end of the rendered turn, so it includes the template's
end-of-turn marker (``<|im_end|>`` for ChatML) and the model learns to stop. Training and the perplexity evaluation
(HF and llama.cpp) both use this function, so "assistant tokens" means the same thing everywhere.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


class ChatTemplateError(ValueError):
    """The tokenizer has no chat template, or the template cannot render these messages."""


def _render(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None, *, prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=prompt, chat_template=chat_template
        )
    except Exception as exc:  # jinja2 raises TemplateError subclasses; transformers raises ValueError
        raise ChatTemplateError(f"chat_template: cannot render the conversation: {exc}") from exc


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return ``(text, [(start, end), ...])``: the character span of each assistant turn."""
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError("chat_template: the tokenizer has no chat template; set chat_template")
    text = _render(tokenizer, messages, chat_template, prompt=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], chat_template, prompt=True)
        upto = _render(tokenizer, messages[: i + 1], chat_template, prompt=False)
        if text.startswith(upto) and upto.startswith(prompt) and len(prompt) >= cursor:
            start, end = len(prompt), len(upto)
        else:
            # Templates that rewrite earlier turns when later ones exist (e.g. Mistral moving the system prompt):
            # fall back to locating the reply text itself, plus an end-of-sequence marker right after it.
            start = text.find(message["content"], cursor)
            if start < 0:
                raise ChatTemplateError(f"chat_template: assistant turn {i} is not reproduced by the template")
            end = start + len(message["content"])
            eos = getattr(tokenizer, "eos_token", None)
            rest = text[end:]
            if eos and rest.lstrip(" ").startswith(eos):
                end += len(rest) - len(rest.lstrip(" ")) + len(eos)
        spans.append((start, end))
        cursor = end
    return text, spans


def encode_chat(
    tokenizer: Any,
    messages: list[dict[str, str]],
    max_length: int,
    chat_template: str | None = None,
) -> dict[str, list[int]]:
    """Tokenize one conversation: ``{"input_ids", "attention_mask", "labels"}`` (lists of int, same length).

    ``labels`` equals ``input_ids`` on assistant tokens and ``-100`` everywhere else. Sequences longer than
    ``max_length`` are truncated at the end (keep the start). Raises :class:`ChatTemplateError` when the template is
    missing or cannot render the messages.
    """
    if max_length < 2:
        raise ValueError(f"max_length: must be >= 2, got {max_length}")
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = list(enc["input_ids"])
        labels = []
        for token_id, (start, end) in zip(input_ids, enc["offset_mapping"]):
            inside = any(start < s_end and end > s_start for s_start, s_end in spans) if end > start else False
            labels.append(token_id if inside else IGNORE_INDEX)
    else:
        # Slow tokenizers have no offsets: tokenize segment by segment (boundaries are template markup anyway).
        input_ids, labels = [], []
        cursor = 0
        for s_start, s_end in spans:
            for segment, is_assistant in ((text[cursor:s_start], False), (text[s_start:s_end], True)):
                if segment:
                    ids = tokenizer(segment, add_special_tokens=False)["input_ids"]
                    input_ids += ids
                    labels += ids if is_assistant else [IGNORE_INDEX] * len(ids)
            cursor = s_end
        if cursor < len(text):
            ids = tokenizer(text[cursor:], add_special_tokens=False)["input_ids"]
            input_ids += ids
            labels += [IGNORE_INDEX] * len(ids)
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}

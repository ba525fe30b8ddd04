"""Turn one raw record (ShareGPT ``conversations`` with ``from``/``value``, or HF-chat ``messages`` with
``role``/``content``) into a clean ``messages`` list, or say why it is unusable.

A usable conversation: an optional leading system message, then strictly alternating user / assistant turns that
start with a user turn and contain at least one assistant reply, every turn non-empty text. A trailing user turn
(no reply, so nothing to learn from) is trimmed rather than rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}

#: reasons a record is skipped, with the text used in reports
REASONS = {
    "not_an_object": "record is not a JSON object",
    "invalid_json": "line is not valid JSON",
    "no_conversation": "no 'conversations' or 'messages' list",
    "empty_conversation": "conversation has no turns",
    "bad_turn": "a turn is not an object with from/value or role/content",
    "unknown_role": "a turn has a role other than human/user, gpt/assistant or system",
    "empty_turn": "a turn has empty text",
    "misplaced_system": "a system message after the first turn",
    "starts_with_assistant": "the first non-system turn is not from the user",
    "not_alternating": "two consecutive turns from the same side",
    "no_assistant_reply": "no assistant reply to learn from",
}


@dataclass
class Standardized:
    """Result of :func:`standardize`: ``messages`` when usable, else ``reason`` (a key of :data:`REASONS`)."""

    messages: list[dict[str, str]] | None
    reason: str | None = None
    trimmed_trailing_user: bool = False


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # HF multimodal-style content parts: keep the text parts
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None


def standardize(record: Any) -> Standardized:
    """Standardize one record to ``[{"role", "content"}, ...]``; never raises."""
    if not isinstance(record, dict):
        return Standardized(None, "not_an_object")
    turns = None
    for key in ("messages", "conversations", "conversation"):
        if isinstance(record.get(key), list):
            turns = record[key]
            break
    if turns is None:
        return Standardized(None, "no_conversation")
    if not turns:
        return Standardized(None, "empty_conversation")

    messages: list[dict[str, str]] = []
    for turn in turns:
        if not isinstance(turn, dict):
            return Standardized(None, "bad_turn")
        raw_role = turn.get("role", turn.get("from"))
        content = _text(turn["content"] if "content" in turn else turn.get("value"))
        if not isinstance(raw_role, str) or content is None:
            return Standardized(None, "bad_turn")
        role = ROLE_MAP.get(raw_role.strip().lower())
        if role is None:
            return Standardized(None, "unknown_role")
        if not content.strip():
            return Standardized(None, "empty_turn")
        messages.append({"role": role, "content": content})

    body = messages
    if messages[0]["role"] == "system":
        body = messages[1:]
    if any(m["role"] == "system" for m in body):
        return Standardized(None, "misplaced_system")
    if not body:
        return Standardized(None, "no_assistant_reply")
    if body[0]["role"] != "user":
        return Standardized(None, "starts_with_assistant")
    for prev, cur in zip(body, body[1:]):
        if prev["role"] == cur["role"]:
            return Standardized(None, "not_alternating")
    trimmed = False
    if body[-1]["role"] == "user":
        messages = messages[:-1]
        trimmed = True
    if not any(m["role"] == "assistant" for m in messages):
        return Standardized(None, "no_assistant_reply")
    return Standardized(messages, None, trimmed)

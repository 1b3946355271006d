"""Turn a model's reply into data: JSON into pydantic models, fenced code into source text.

Prompts ask for JSON in a ```json fenced block and code in ```python blocks, which every model
writes reliably (JSON-escaping a 50 KB module inside a JSON string is where models slip). The
parsers here are lenient about what surrounds the block (prose before or after, a missing
language tag, no fence at all) and strict about the content: a reply that does not parse
raises `ReplyError` with a message meant to be fed back to the model.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["ReplyError", "code_blocks", "extract_json", "parse_model"]

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_MAX_ERRORS = 8


class ReplyError(ValueError):
    """The reply does not have the requested form; the message says why, for the model."""


def _fenced(text: str) -> list[tuple[str, str]]:
    """(language, body) of every complete fenced block, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def extract_json(text: str) -> Any:
    """The JSON value of a reply: its ```json block, else the whole text, else its outermost {...}.

    Raises:
        ReplyError: no JSON found, or it does not parse (with the parser's position).
    """
    blocks = [body for lang, body in _fenced(text) if lang in ("json", "")]
    if blocks:
        candidate = blocks[0]
    else:
        stripped = text.strip()
        if stripped.startswith("```"):  # an opening fence that is never closed: a cut-off reply
            candidate = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        elif stripped.startswith(("{", "[")):
            candidate = stripped
        else:
            start, end = text.find("{"), text.rfind("}")
            if start < 0 or end <= start:
                raise ReplyError("the reply holds no JSON object; send it in a ```json fenced block")
            candidate = text[start : end + 1]
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as exc:
        lines = candidate.splitlines()
        near = lines[exc.lineno - 1].strip()[:120] if 0 < exc.lineno <= len(lines) else ""
        raise ReplyError(
            f"the JSON does not parse: {exc.msg} at line {exc.lineno} column {exc.colno}"
            + (f" (near: {near})" if near else "")
        ) from None


def parse_model(text: str, model: type[M]) -> M:
    """Parse a reply's JSON into `model`.

    Raises:
        ReplyError: the JSON is missing, malformed, or does not fit the model (each field at
            fault named by its path).
    """
    data = extract_json(text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'the object'}: {err['msg']}"
            for err in exc.errors()[:_MAX_ERRORS]
        ]
        more = len(exc.errors()) - len(problems)
        raise ReplyError(
            "the JSON does not have the requested fields: " + "; ".join(problems)
            + (f"; and {more} more" if more > 0 else "")
        ) from None


def code_blocks(text: str, language: str = "python", *, untagged: bool = True) -> list[str]:
    """The bodies of the reply's fenced blocks in `language` (and untagged ones), in order."""
    names = {language, "py"} if language == "python" else {language}
    if untagged:
        names.add("")
    return [body for lang, body in _fenced(text) if lang in names]

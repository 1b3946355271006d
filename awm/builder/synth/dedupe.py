"""Near-duplicate scenarios: by embedding similarity when an embedding model is configured,
otherwise by a lexical rule.

Embeddings: the text `"<name>: <description>"` of each scenario is embedded; a candidate whose
cosine similarity to any scenario already taken (seeds included) reaches `embedding_threshold`
(default 0.9) is a near-duplicate.

Lexical fallback (no embedding model), documented in the README:

* words are lowercase runs of letters and digits; stop words and generic product words
  ("app", "platform", "system", "manager", "online"...) are dropped; a trailing "s" is cut
  from words longer than four letters, so "reservations" and "reservation" agree;
* **names**: a candidate is a near-duplicate when the Jaccard overlap of its name words with
  those of a taken name reaches `name_overlap` (default 0.5: "PantryPal Meal Planner" vs
  "PantryPal Recipe Planner" shares 2 of 4 words), or when both names normalise to the same id;
* **descriptions**: or when the cosine similarity of the word-count vectors of the two
  descriptions reaches `description_overlap` (default 0.6; the three bundled examples score
  0.09-0.12 against each other, a reworded copy of one description scores well above 0.6).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from awm.core.naming import normalise

__all__ = ["cosine", "description_similarity", "lexical_duplicate", "name_overlap", "words"]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "each", "for", "from", "has", "have",
    "in", "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "them", "they",
    "this", "to", "through", "via", "was", "were", "what", "when", "where", "which", "who",
    "will", "with", "within", "without", "your", "you", "our", "we", "all", "any", "also",
    "both", "more", "most", "other", "some", "such", "than", "then", "these", "those", "very",
    "per", "own", "app", "apps", "application", "platform", "system", "service", "services",
    "manager", "management", "portal", "online", "hub", "tool", "tools", "suite", "pro",
    "plus", "solution", "solutions", "software"
    ]
)


def words(text: str) -> list[str]:
    """The content words of a text, as the lexical rule compares them."""
    out = []
    for w in _WORD.findall(text.lower()):
        if w in _STOP:
            continue
        out.append(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def name_overlap(a: str, b: str) -> float:
    """Jaccard overlap of two names' content words (0 when either has none)."""
    x, y = set(words(a)), set(words(b))
    return len(x & y) / len(x | y) if x and y else 0.0


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    dot = sum(a * b for a, b in zip(u, v, strict=False))
    nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
    return dot / (nu * nv) if nu and nv else 0.0


def description_similarity(a: str, b: str) -> float:
    """Cosine similarity of the word-count vectors of two descriptions."""
    ca, cb = Counter(words(a)), Counter(words(b))
    keys = sorted(set(ca) | set(cb))
    return cosine([ca[k] for k in keys], [cb[k] for k in keys])


def lexical_duplicate(
    name: str,
    description: str,
    taken: Sequence[tuple[str, str]],
    *,
    name_threshold: float = 0.5,
    description_threshold: float = 0.6,
) -> str | None:
    """Why (name, description) is a near-duplicate of a taken scenario, or None.

    Args:
        name: the candidate's name.
        description: the candidate's description.
        taken: (name, description) of the scenarios it must differ from.
        name_threshold: the name overlap at which it is a duplicate.
        description_threshold: the description similarity at which it is a duplicate.
    """
    sid = normalise(name)
    for other, other_description in taken:
        if normalise(other) == sid:
            return f"same id as {other!r}"
        overlap = name_overlap(name, other)
        if overlap >= name_threshold:
            return f"name too close to {other!r} (word overlap {overlap:.2f} >= {name_threshold:g})"
        if description and other_description:
            similarity = description_similarity(description, other_description)
            if similarity >= description_threshold:
                return (f"description too close to that of {other!r} (similarity {similarity:.2f} >= "
                        f"{description_threshold:g})")
    return None

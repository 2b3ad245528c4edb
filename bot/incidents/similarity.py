"""When two reports name the same fault: rapidfuzz's token-set similarity, so word order and extra words
("email is down again in Pune" / "email down") do not hide a match."""

from __future__ import annotations

from collections.abc import Mapping

from rapidfuzz import fuzz, process, utils


def similar_keys(text: str, candidates: Mapping[int, str], cutoff: int) -> list[int]:
    """Keys of the ``candidates`` at least ``cutoff`` (0-100) alike to ``text``, most alike first."""
    if not candidates:
        return []
    found = process.extract(text, candidates, scorer=fuzz.token_set_ratio, processor=utils.default_process,
                            score_cutoff=cutoff, limit=None)
    return [int(key) for _, _, key in found]


def best_key(text: str, candidates: Mapping[int, str], cutoff: int) -> int | None:
    """The key of the candidate most alike to ``text`` (at least ``cutoff``), or None."""
    found = process.extractOne(text, candidates, scorer=fuzz.token_set_ratio, processor=utils.default_process,
                               score_cutoff=cutoff) if candidates else None
    return None if found is None else int(found[2])

"""When two reports name the same fault: rapidfuzz's token-set similarity, so word order and extra words
("email is down again in Pune" / "email down") do not hide a match.

People word one fault many ways, and two wordings of it need not be alike ("email not working, down" / "Email
down in Pune"), while each is alike to others' reports. So a report belongs with a group (an incident, a
suggestion) when it is alike to the group's title or to a report already in it (``alike_to_group``), and a
group gathers the reports alike to its title and those alike to them (``similar_keys_one_hop``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def alike_to_group(text: str, groups: Mapping[int, Iterable[str]], cutoff: int) -> int | None:
    """The key of the group with the text (a title, a report in it) most alike to ``text``, or None."""
    texts: list[str] = []
    keys: list[int] = []
    for key, members in groups.items():
        for member in dict.fromkeys(members):
            texts.append(member)
            keys.append(key)
    found = process.extractOne(text, texts, scorer=fuzz.token_set_ratio, processor=utils.default_process,
                               score_cutoff=cutoff) if texts else None
    return None if found is None else keys[found[2]]


def similar_keys_one_hop(text: str, candidates: Mapping[int, str], cutoff: int) -> list[int]:
    """Keys of the ``candidates`` alike to ``text`` or to a candidate alike to it, in key order."""
    near = similar_keys(text, candidates, cutoff)
    found = set(near)
    rest = {key: value for key, value in candidates.items() if key not in found}
    for wording in dict.fromkeys(candidates[key] for key in near):
        if not rest:
            break
        hop = similar_keys(wording, rest, cutoff)
        found.update(hop)
        rest = {key: value for key, value in rest.items() if key not in found}
    return sorted(found)

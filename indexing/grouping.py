"""Grouped search: the best hits of the best groups, a group being the documents that share one
value of a metadata field.

A retrieval-augmented prompt wants its top passages from different sources, not ten chunks of one
page; a catalogue wants one product per brand. Grouping walks the ranked candidates in order: a
candidate joins the group of its value (each element's group, for an array; it holds no group when
the field is absent or an object) until `size` members are in it, and opens a new group while fewer
than `groups` are open. Groups rank by their best member, so the first `groups` values seen are the
answer; searching deeper only fills their members. Values are typed as filters and facets compare
them: 1 and 1.0 are one group, true is not 1.

The candidates come from one search of depth `group_depth`, deepened (x`GROUP_OVERFETCH`) while a
group is short of members and the index holds more, up to `GROUP_MAX_DEPTH`: a group with fewer
members than `size` anywhere in the collection costs that depth, and so do small groups whose
members are scattered through the ranking. With a metadata index on the field the collection
deepens only until `groups` groups are open, then completes the short ones by one search filtered
to their values (`Collection._complete_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

GROUP_OVERFETCH = 4  # candidates per wanted member, and the factor each deeper search grows by
GROUP_MAX_DEPTH = 4096  # candidates a grouped search reads at most
MAX_GROUP_SIZE = 100


@dataclass(frozen=True)
class Grouping:
    field: str
    size: int = 1


@dataclass
class Group:
    key: tuple[str, Any]  # (kind, value), as facets key values
    vids: list[int] = field(default_factory=list)  # members' document vector ids, best first

    @property
    def value(self) -> Any:
        return self.key[1]


def group_depth(groups: int, size: int) -> int:
    return min(GROUP_MAX_DEPTH, max(32, GROUP_OVERFETCH * groups * size))


def pick(ranked: Sequence[int], keys: dict[int, list[tuple[str, Any]]], groups: int, size: int
         ) -> tuple[list[Group], bool]:
    """The first `groups` groups of the ranked documents with at most `size` members each, and
    whether they are complete (`groups` of them, each with `size` members)."""
    out: dict[tuple[str, Any], Group] = {}
    for vid in ranked:
        for key in keys.get(vid, ()):
            group = out.get(key)
            if group is None:
                if len(out) == groups:
                    continue
                group = out[key] = Group(key)
            if len(group.vids) < size:
                group.vids.append(vid)
    chosen = list(out.values())
    return chosen, len(chosen) == groups and all(len(g.vids) == size for g in chosen)


def members(chosen: list[Group]) -> list[int]:
    """Every member once, in group order (a document in two groups, by array elements, at its first)."""
    return list(dict.fromkeys(v for g in chosen for v in g.vids))

"""Facets: how many documents (matching a filter) hold each value of one metadata field.

Values are typed as filters compare them: `1` and `1.0` are one number, `true` is a boolean and
never the number 1, `"1"` is text, and `null` is a value of its own (a document without the field
holds none). An array field counts each distinct element once per document, as `$contains` would
match it; objects and nested arrays are not values.

One GROUP BY over the field's value and JSON type does it: on the very expressions a metadata index
holds (`index_columns`), so an indexed field is counted from its index without reading a row. An
array comes out of it as its JSON text, with the number of documents holding exactly that array,
and its elements are counted from the text. A field with an array index (`tags[]`) has its
elements counted from the index's rows instead, grouped in the index's order by value and JSON type;
so there, and only there, an array holding one number both as an integer and as a real (`[1, 1.0]`)
counts its document twice for that number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from indexing.filters import check_field, json_path

_KIND = {"integer": "number", "real": "number", "true": "bool", "false": "bool", "text": "text", "null": "null"}


@dataclass(frozen=True)
class FacetValue:
    value: Any
    count: int


def facet_queries(
    field: str, where: str, array_indexed: bool = False, few_matches: bool = False
) -> tuple[str, str | None]:
    """The value query (taking the filter's parameters) and, for an array-indexed field, the element
    query (taking the field name, then the filter's parameters unless `where` is the empty filter).

    `few_matches`: the filter matches few documents, so their rows drive the element query (one
    index lookup each) instead of a walk over every element of the field."""
    path = json_path(check_field(field, "field"))
    value_of, type_of = f"json_extract(metadata, {path})", f"json_type(metadata, {path})"
    skipped = "('object', 'array')" if array_indexed else "('object')"
    values = (f"SELECT {value_of}, {type_of}, count(*) FROM documents "
              f"WHERE ({where}) AND {type_of} NOT IN {skipped} GROUP BY {value_of}, {type_of}")
    if not array_indexed:
        return values, None
    if few_matches and where != "1":
        source = (f"(SELECT vid FROM documents WHERE {where}) AS d CROSS JOIN array_values AS a "
                  "ON a.vid = d.vid AND a.field = ?")
        elements = (f"SELECT a.value, a.type, count(DISTINCT a.vid) FROM {source} "
                    "WHERE a.type NOT IN ('object', 'array') GROUP BY a.value, a.type")
        return values, elements
    matching = "" if where == "1" else f" AND a.vid IN (SELECT vid FROM documents WHERE {where})"
    elements = ("SELECT a.value, a.type, count(DISTINCT a.vid) FROM array_values AS a "  # in the index's order
                f"WHERE a.field = ?{matching} AND a.type NOT IN ('object', 'array') GROUP BY a.value, a.type")
    return values, elements


def merge_counts(rows: list[tuple[Any, str, int]], limit: int) -> tuple[list[FacetValue], int]:
    """The `limit` most frequent typed values (ties: by kind, then value), and how many there are.

    `rows` are (value, JSON type, documents); an `array` row's value is the array's JSON text.
    """
    counts: dict[tuple[str, Any], int] = {}
    for raw, json_type, n in rows:
        for key in typed_values(raw, json_type):
            counts[key] = counts.get(key, 0) + n
    order = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], str(item[0][1])))
    return [FacetValue(value, n) for (_, value), n in order[:limit]], len(counts)


def typed_values(raw: Any, json_type: str | None) -> list[tuple[str, Any]]:
    """The (kind, value) keys one document holds for a field, from SQLite's `json_extract` and
    `json_type` of it: none when absent or an object, each distinct scalar element of an array."""
    if json_type is None or json_type == "object":
        return []
    if json_type == "array":
        return list(dict.fromkeys(_typed(e) for e in json.loads(raw) if not isinstance(e, (dict, list))))
    kind = _KIND[json_type]
    return [(kind, None if kind == "null" else bool(raw) if kind == "bool" else raw)]  # JSON true/false read as 1/0


def _typed(value: Any) -> tuple[str, Any]:
    """An array element parsed from JSON, keyed as its kind and value (so `1` and `1.0` are one)."""
    if value is None:
        return "null", None
    if isinstance(value, bool):
        return "bool", value
    return ("number" if isinstance(value, (int, float)) else "text"), value

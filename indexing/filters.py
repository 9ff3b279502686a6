"""The metadata filter language of search, listing and deletes, compiled to one SQL condition.

A filter is a JSON object. Each `field: value` pair must hold (AND); `a.b` reaches nested fields. A
plain value means equality. An object of operators compares instead:
`$eq $ne $gt $gte $lt $lte` (one scalar; the ordering ones take a number or a string, so ISO dates
compare as text), `$in $nin` (a list of scalars), `$exists` (true or false), `$contains` (the field
is an array holding the scalar). `$and` / `$or` take a list of filters.

Comparisons are typed: a number never equals a string or a boolean (SQLite's JSON functions return
true as 1, so equality on `json_extract` alone would conflate them). Negations (`$ne`, `$nin`,
`$exists: false`) hold for documents that lack the field.

A field's JSON path is written into the SQL as a literal (field names are restricted to characters
that cannot end it), never bound: SQLite uses an index on an expression only when the query holds
the same expression, so `index_columns(field)` -- what a metadata index is built on -- and every
equality, `$in` and comparison here read `json_extract(metadata, '$."field"')` first, with the type
test beside it as the index's second column: an indexed match never reads the row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from indexing.errors import InvalidDocument

_FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = ("$eq", "$ne", *_COMPARE, "$in", "$nin", "$exists", "$contains")
MAX_LIST = 1024  # values in one $in / $nin, filters in one $and / $or
MAX_DEPTH = 8  # nesting of $and / $or
MAX_COMPOSITE = 4  # fields of one composite metadata index
ARRAY_INDEX = "[]"  # `tags[]`: an index of the values inside an array field, for `$contains`


def check_field(field: Any, where: str) -> str:
    """A metadata field name (dots reach nested fields), or InvalidDocument naming `where`."""
    if not isinstance(field, str) or not _FIELD.match(field):
        raise InvalidDocument(f"{where}: invalid field name {field!r} (letters, digits, _ . -; up to 128)")
    return field


def json_path(field: str) -> str:
    """The field's JSON path as an SQL string literal (safe: `_FIELD` admits no quote)."""
    return "'$." + ".".join(f'"{part}"' for part in field.split(".")) + "'"


def check_index(spec: Any, where: str) -> str:
    """A metadata index: one field, or up to 4 joined by `+` (a composite index, in that order)."""
    if not isinstance(spec, str):
        raise InvalidDocument(f"{where}: must be a field name, or field names joined by '+'")
    if spec.endswith(ARRAY_INDEX):  # an array index: one field, not part of a composite
        check_field(spec[: -len(ARRAY_INDEX)], where)
        return spec
    parts = spec.split("+")
    if len(parts) > MAX_COMPOSITE or len(set(parts)) != len(parts):
        raise InvalidDocument(f"{where}: a composite index joins 2 to {MAX_COMPOSITE} different fields with '+'")
    for part in parts:
        check_field(part, where)
    return spec


def array_triggers(field: str) -> dict[str, str]:
    """The triggers that keep `array_values` in step with one array field: name -> body.

    They fire in the transaction of every write (upsert: ON CONFLICT DO UPDATE; PATCH; delete), so
    the rows can never disagree with the documents. Non-arrays (absent, scalar, object) get no rows,
    as `$contains` holds only for arrays.
    """
    rows = _array_rows(field, "new", "") + ";"
    forget = f"DELETE FROM array_values WHERE vid = old.vid AND field = '{field}';"
    return {
        "insert": f"AFTER INSERT ON documents BEGIN {rows} END",
        "update": f"AFTER UPDATE OF metadata ON documents BEGIN {forget} {rows} END",
        "delete": f"AFTER DELETE ON documents BEGIN {forget} END",
    }


def array_backfill(field: str) -> str:
    """The `array_values` rows of one field for the documents already stored."""
    return _array_rows(field, "d", "documents AS d, ")


def _array_rows(field: str, row: str, source: str) -> str:
    """INSERT of one row per element of `row`'s array `field` (none when it is not an array)."""
    path = json_path(check_field(field, "field"))
    return (f"INSERT INTO array_values(field, type, value, vid) SELECT '{field}', e.type, e.value, {row}.vid "
            f"FROM {source}json_each({row}.metadata, {path}) AS e WHERE json_type({row}.metadata, {path}) = 'array'")


def index_columns(spec: str, column: str = "metadata") -> str:
    """The indexed expressions of a metadata index: each field's value, then its JSON type. In a
    composite index `a+b` an equality on `a` and a range (or equality) on `b` both use it."""
    paths = [json_path(part) for part in check_index(spec, "field").split("+")]
    return ", ".join(f"json_extract({column}, {p}), json_type({column}, {p})" for p in paths)


RowWise = bool | Callable[[str, Any], bool]  # per indexed `$contains` (field, value): test it row by row?
Lists = Callable[[str, list[Any]], bool]  # per index-read id list (its rows' test): few enough to build?


@dataclass(frozen=True)
class _Compile:
    """What compiling one filter needs besides the filter: the indexes it may read, and for what."""

    column: str
    arrays: frozenset[str]
    indexed: frozenset[str]
    per_row: RowWise
    lists: Lists | None = None  # None: every id list a negation or `$exists` could read is built

    def row_wise(self, key: str, value: Any) -> bool:
        return self.per_row if isinstance(self.per_row, bool) else self.per_row(key, value)

    def few(self, test: str, params: list[Any]) -> bool:
        return self.lists is None or self.lists(test, params)


def filter_sql(filter_: dict[str, Any], arrays: frozenset[str] = frozenset(), per_row: RowWise = False,
               indexed: frozenset[str] = frozenset(), lists: Lists | None = None) -> tuple[str, list[Any]]:
    """An SQL condition on a `documents` row (its `metadata` column) and its parameters.

    `arrays`: fields with an array index (`array_values` rows kept by triggers): `$contains` on them
    looks the value up there instead of unpacking every document's array. `indexed`: fields with a
    metadata index of their own, through which a negation (`$ne`, `$nin`, `$exists`) finding matches
    reads the documents it excludes, instead of every row's metadata. `per_row`: the condition is
    tested on given rows (a search's candidates) rather than used to find the matching rows, so
    those lookups probe each row instead of collecting every document that holds the value; a
    callable decides it per `$contains` (field, value), for a scan that stops at a limit (store.py).
    `lists` decides the same for a negation or `$exists` in such a scan: given the test of the rows
    it would list (the excluded, the present), whether to read them all first (few) or to test each
    row the scan passes (many).
    """
    if not isinstance(filter_, dict):
        raise InvalidDocument("filter: must be an object of field: value pairs")
    return _all(filter_, "filter", 0, _Compile("metadata", arrays, indexed, per_row, lists))


def _all(filter_: dict[str, Any], where: str, depth: int, ctx: _Compile) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in filter_.items():
        if key in ("$and", "$or"):
            sql, p = _combine(key, value, f"{where}.{key}", depth, ctx)
        elif key.startswith("$"):
            raise InvalidDocument(f"{where}: unknown operator {key!r} (at this level: $and, $or, or field names)")
        else:
            sql, p = _field(key, value, where, ctx)
        clauses.append(sql)
        params += p
    return (" AND ".join(clauses) if clauses else "1"), params


def _combine(op: str, value: Any, where: str, depth: int, ctx: _Compile) -> tuple[str, list[Any]]:
    if depth >= MAX_DEPTH:
        raise InvalidDocument(f"{where}: $and/$or nested deeper than {MAX_DEPTH}")
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise InvalidDocument(f"{where}: must be a list of 1 to {MAX_LIST} filters")
    parts: list[str] = []
    params: list[Any] = []
    for i, sub in enumerate(value):
        if not isinstance(sub, dict):
            raise InvalidDocument(f"{where}[{i}]: must be an object of field: value pairs")
        sql, p = _all(sub, f"{where}[{i}]", depth + 1, ctx)
        parts.append(f"({sql})")
        params += p
    return "(" + (" AND " if op == "$and" else " OR ").join(parts) + ")", params


def _field(key: str, value: Any, where: str, ctx: _Compile) -> tuple[str, list[Any]]:
    path = json_path(check_field(key, where))
    column = ctx.column
    where = f"{where}.{key}"
    if not isinstance(value, dict):
        return _equal(column, path, _scalar(value, where))
    if not value:
        raise InvalidDocument(f"{where}: an operator object needs at least one of {', '.join(_OPERATORS)}")
    # A negation finding matches on an indexed field: every document but those the index lists.
    through_index = key in ctx.indexed and ctx.per_row is not True

    def negate(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        if through_index and ctx.few(sql, params):
            return _excluding(sql, params)
        return _negate(sql, params)

    clauses: list[str] = []
    params: list[Any] = []
    for op, operand in value.items():
        at = f"{where}.{op}"
        if op == "$eq":
            sql, p = _equal(column, path, _scalar(operand, at))
        elif op == "$ne":
            sql, p = negate(*_equal(column, path, _scalar(operand, at)))
        elif op in _COMPARE:
            sql, p = _compare(column, path, _COMPARE[op], operand, at)
        elif op in ("$in", "$nin"):
            sql, p = _member(column, path, operand, at)
            if op == "$nin":
                sql, p = negate(sql, p)
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidDocument(f"{at}: must be true or false")
            present = _present(column, path)
            listed = through_index and ctx.few(present, [])
            if listed and operand:
                sql, p = f"vid IN (SELECT vid FROM documents WHERE {present})", []
            elif listed:
                sql, p = _excluding(present, [])
            else:
                sql, p = f"json_type({column}, {path}) IS {'NOT ' if operand else ''}NULL", []
        elif op == "$contains":
            element = _scalar(operand, at)
            sql, p = (_contains_indexed(key, element, ctx.row_wise(key, element))
                      if key in ctx.arrays else _contains(column, path, element))
        else:
            raise InvalidDocument(f"{at}: unknown operator (one of {', '.join(_OPERATORS)})")
        clauses.append(sql)
        params += p
    return "(" + " AND ".join(clauses) + ")", params


def _scalar(value: Any, where: str) -> str | int | float | bool | None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InvalidDocument(f"{where}: value must be a string, number, boolean or null")


def _typed(value: str | int | float) -> tuple[str, Any]:
    """The JSON type test for a string or a number, and the value as SQLite compares it (an integer
    beyond 64 bits as a float: SQLite cannot bind it, and reads such JSON numbers as reals)."""
    if isinstance(value, str):
        return "= 'text'", value
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        value = float(value)
    return "IN ('integer', 'real')", value


def _equal(column: str, path: str, value: Any) -> tuple[str, list[Any]]:
    value_of, type_of = f"json_extract({column}, {path})", f"json_type({column}, {path})"
    if value is None:
        return f"({value_of} IS NULL AND {type_of} = 'null')", []
    if isinstance(value, bool):  # JSON true/false read as 1/0; the type test tells them from numbers
        return f"({value_of} = ? AND {type_of} = ?)", [int(value), "true" if value else "false"]
    test, operand = _typed(value)
    return f"({value_of} = ? AND {type_of} {test})", [operand]


def _negate(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    return f"NOT COALESCE({sql}, 0)", params  # a missing field makes the test NULL: its negation holds


def _excluding(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The negation of an index-served test as the documents it does not list: the index reads the
    excluded ones, and the rest are vector ids from the smallest index (no row's metadata is read)."""
    return f"vid NOT IN (SELECT vid FROM documents WHERE {sql})", params


def _present(column: str, path: str) -> str:
    """`json_type(...) IS NOT NULL` as two reads of the field's index: every non-null value sorts at
    or above -Inf (numbers, then text: objects and arrays read as their JSON text), and JSON null is
    the one value `json_extract` returns as NULL."""
    value_of = f"json_extract({column}, {path})"
    return f"({value_of} >= -9e999 OR ({value_of} IS NULL AND json_type({column}, {path}) = 'null'))"


def _compare(column: str, path: str, sign: str, value: Any, where: str) -> tuple[str, list[Any]]:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidDocument(f"{where}: must be a number or a string")
    test, operand = _typed(value)
    return f"(json_extract({column}, {path}) {sign} ? AND json_type({column}, {path}) {test})", [operand]


def _member(column: str, path: str, values: Any, where: str) -> tuple[str, list[Any]]:
    if not isinstance(values, list) or not values or len(values) > MAX_LIST:
        raise InvalidDocument(f"{where}: must be a list of 1 to {MAX_LIST} values")
    parts: list[str] = []
    params: list[Any] = []
    for i, v in enumerate(values):
        sql, p = _equal(column, path, _scalar(v, f"{where}[{i}]"))
        parts.append(sql)
        params += p
    return "(" + " OR ".join(parts) + ")", params


def _element(alias: str, value: Any) -> tuple[str, list[Any]]:
    """The typed test of one array element (a `json_each` row or an `array_values` row), value first
    so the array index's (field, value, type) lookup serves it."""
    if value is None:
        return f"{alias}.value IS NULL AND {alias}.type = 'null'", []
    if isinstance(value, bool):
        return f"{alias}.value = ? AND {alias}.type = ?", [int(value), "true" if value else "false"]
    kind, operand = _typed(value)
    return f"{alias}.value = ? AND {alias}.type {kind}", [operand]


def _contains(column: str, path: str, value: Any) -> tuple[str, list[Any]]:
    test, params = _element("e", value)
    sql = (f"(json_type({column}, {path}) = 'array' AND EXISTS (SELECT 1 FROM json_each({column}, {path}) AS e "
           f"WHERE {test}))")
    return sql, params


def served_by_indexes(filter_: dict[str, Any], indexed: frozenset[str], arrays: frozenset[str]) -> bool:
    """Whether every condition of a filter reads an index: any condition but `$contains` on a field
    that leads a metadata index (a negation reads the documents it excludes there), or a `$contains`
    on an array-indexed field. A malformed filter is not served (compiling it reports what is wrong)."""
    if not isinstance(filter_, dict):
        return False
    for key, value in filter_.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not all(served_by_indexes(sub, indexed, arrays) for sub in value):
                return False
        elif not isinstance(value, dict):
            if key not in indexed:
                return False
        else:
            for op in value:
                if op == "$contains":
                    if key not in arrays:
                        return False
                elif key not in indexed:
                    return False
    return True


def holders_source(filter_: Any, arrays: frozenset[str]) -> tuple[str, list[Any]] | None:
    """For a filter that is one `$contains` on an array-indexed field: a query of the matching vector
    ids straight from the array index, else None. Its entries name only stored documents (triggers
    keep them), so the documents table need not be read: that was one table lookup per match."""
    if not isinstance(filter_, dict) or len(filter_) != 1:
        return None
    ((key, cond),) = filter_.items()
    if key not in arrays or not isinstance(cond, dict) or list(cond) != ["$contains"]:
        return None
    test, params = _element("a", _scalar(cond["$contains"], f"filter.{key}.$contains"))
    # DISTINCT: an array may hold the value twice; the index's (field, value, type, vid) order keeps it cheap
    return f"SELECT DISTINCT a.vid AS vid FROM array_values AS a WHERE a.field = ? AND {test}", [key, *params]


def array_holders_sql(key: str, value: Any, limit: int) -> tuple[str, list[Any]]:
    """How many documents' array field `key` holds `value`, counted from the array index up to `limit`."""
    test, params = _element("a", value)
    return (f"SELECT count(*) FROM (SELECT 1 FROM array_values AS a WHERE a.field = ? AND {test} LIMIT ?)",
            [key, *params, int(limit)])


def _contains_indexed(key: str, value: Any, per_row: bool = False) -> tuple[str, list[Any]]:
    """`$contains` through the array index: the same typed test on the rows its triggers keep.

    Finding matches, the value's index entries list them; testing given rows, each row is one probe
    of (value, vid) in the same index, since collecting every holder of a common value first (a tag
    half the documents carry) would cost that on every test.
    """
    test, params = _element("a", value)
    if per_row:
        return (f"EXISTS (SELECT 1 FROM array_values AS a WHERE a.vid = documents.vid AND a.field = ? AND {test})",
                [key, *params])
    return f"vid IN (SELECT a.vid FROM array_values AS a WHERE a.field = ? AND {test})", [key, *params]

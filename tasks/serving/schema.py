"""Request bodies in, model input rows out; model answers in, response bodies out.

Two request formats, both JSON:
- MLflow's scoring protocol (`POST /invocations`): `{"dataframe_split": {"columns": [...],
  "data": [[...], ...]}}` or `{"dataframe_records": [{column: value, ...}, ...]}`; the
  answer is `{"predictions": [{<output>: ..., <decision>: ...}, ...]}` like MLflow's.
- Open Inference Protocol v2 (`POST /v2/models/<name>/infer`): one input tensor per column,
  `{"inputs": [{"name": "carrier", "shape": [n], "datatype": "BYTES", "data": [...]}]}`.

Every value is checked against the type the model's signature gives its column; a bad
request is a `RequestError` whose message names the column (and row) at fault. Columns the
model does not use are ignored, as MLflow does; a missing required column is an error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd


@dataclass(frozen=True)
class Column:
    """One input column of the model's signature."""

    name: str
    type: str  # MLflow ColSpec type: string, double, float, long, integer, boolean, datetime
    required: bool


NUMBER_TYPES = ("double", "float", "long", "integer")
V2_TYPES = {"string": "BYTES", "boolean": "BOOL", "datetime": "BYTES"}
# A request's rows, checked: one array per input column of the model.
Columns = dict[str, np.ndarray]


class RequestError(ValueError):
    """A request the service refuses: an HTTP status (4xx) and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json(body: bytes) -> Any:
    """The request's JSON: orjson (several times faster on a 256-row body), and the
    standard library where orjson refuses what it accepts (NaN, huge integers), so the
    service accepts exactly what it did and its error messages stay the same."""
    if not body.strip():
        raise RequestError(400, "empty request body; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(400, f"request body is not valid JSON: {error}") from None


def dump_json(body: Any) -> bytes:
    """A response body (orjson; Python floats and bools only, so it equals json.dumps)."""
    return orjson.dumps(body)


def _bad_value(column: Column, row: int, value: Any, expected: str) -> RequestError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return RequestError(
        422, f"column {column.name!r}, row {row}: expected {expected} ({column.type}), got {shown}"
    )


_NONE = type(None)
# The value types each check accepts without a look at each value (`set(map(type, ...))`
# runs in C): a 256-row request is mostly these checks otherwise. Anything else goes
# through the loop that names the row.
_STRINGS, _NUMBERS = {str, _NONE}, {int, float, _NONE}


def _check_strings(column: Column, values: Sequence[Any]) -> np.ndarray:
    if set(map(type, values)) <= _STRINGS:
        return np.array(values, dtype=object)
    for row, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise _bad_value(column, row, value, "a string")
    return np.array(values, dtype=object)


def _check_numbers(column: Column, values: Sequence[Any]) -> np.ndarray:
    integral = column.type in ("long", "integer")
    kinds = set(map(type, values))
    if kinds <= _NUMBERS:
        if _NONE in kinds:
            values = [math.nan if v is None else v for v in values]
        out = np.array(values, dtype=np.float64)
        finite = out[np.isfinite(out)]
        if not integral or float not in kinds or np.array_equal(finite, np.floor(finite)):
            return out
    for row, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad_value(column, row, value, "a number")
        if (
            integral
            and isinstance(value, float)
            and math.isfinite(value)
            and not value.is_integer()
        ):
            raise _bad_value(column, row, value, "an integer")
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


# What numpy parses exactly as pandas' ISO 8601 parser does: a date, optionally a time.
_PLAIN_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?")


def _check_dates(column: Column, values: Sequence[Any]) -> np.ndarray:
    if not set(map(type, values)) <= _STRINGS:
        for row, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                raise _bad_value(column, row, value, "an ISO date string")
    if all(value is not None and _PLAIN_ISO.fullmatch(value) for value in values):
        try:  # the common case, without a pandas Series per request
            return np.array([v.replace(" ", "T") for v in values], dtype="datetime64[ns]")
        except ValueError:
            pass  # e.g. 2013-02-30: pandas below names the row
    parsed = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", format="ISO8601")
    for row, (value, stamp) in enumerate(zip(values, parsed, strict=True)):
        if value is not None and pd.isna(stamp):
            raise _bad_value(column, row, value, "an ISO date (YYYY-MM-DD)")
    return parsed.to_numpy()


def _check_booleans(column: Column, values: Sequence[Any]) -> np.ndarray:
    for row, value in enumerate(values):
        if value is not None and not isinstance(value, bool):
            raise _bad_value(column, row, value, "true or false")
    return np.array(values, dtype=object)


def typed_columns(given: dict[str, Sequence[Any]], n: int, schema: Sequence[Column]) -> Columns:
    """Check every value against its column's type; the model's input columns as arrays."""
    missing = [c.name for c in schema if c.required and c.name not in given]
    if missing:
        expected = [c.name for c in schema]
        raise RequestError(
            422, f"missing required column(s) {missing}; the model's input columns are {expected}"
        )
    out: Columns = {}
    for column in schema:
        values = given.get(column.name, [None] * n)
        if column.type == "string":
            out[column.name] = _check_strings(column, values)
        elif column.type in NUMBER_TYPES:
            out[column.name] = _check_numbers(column, values)
        elif column.type == "datetime":
            out[column.name] = _check_dates(column, values)
        else:
            out[column.name] = _check_booleans(column, values)
    return out


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise RequestError(422, "no rows to score: the request holds 0 rows")
    if n > max_rows:
        raise RequestError(413, f"{n} rows in one request; at most {max_rows} are accepted")


def columns_from_split(split: Any, schema: Sequence[Column], max_rows: int) -> tuple[Columns, int]:
    """`dataframe_split` ({"columns": [...], "data": [[...], ...]}) as checked columns."""
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise RequestError(422, "dataframe_split must be an object with a 'columns' list")
    names, data = split["columns"], split.get("data")
    if not isinstance(data, list):
        raise RequestError(422, "dataframe_split.data must be a list of rows")
    if not all(isinstance(name, str) for name in names):
        raise RequestError(422, "dataframe_split.columns must be column names (strings)")
    _check_rows(len(data), max_rows)
    for row, values in enumerate(data):
        if not isinstance(values, list) or len(values) != len(names):
            raise RequestError(
                422, f"dataframe_split.data row {row}: expected a list of {len(names)} values"
            )
    by_name = dict(zip(names, map(list, zip(*data, strict=True)), strict=True))  # transposed in C
    return typed_columns(by_name, len(data), schema), len(data)


def columns_from_records(
    records: Any, schema: Sequence[Column], max_rows: int
) -> tuple[Columns, int]:
    """`dataframe_records` ([{column: value}, ...]) as checked columns."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(422, "dataframe_records must be a list of objects (one per row)")
    _check_rows(len(records), max_rows)
    names = {name for record in records for name in record}
    by_name = {name: [record.get(name) for record in records] for name in names}
    for column in schema:  # a required column absent from one record is missing there
        if column.required and column.name in names:
            for row, record in enumerate(records):
                if column.name not in record:
                    raise RequestError(
                        422, f"dataframe_records row {row}: missing column {column.name!r}"
                    )
    return typed_columns(by_name, len(records), schema), len(records)


def columns_from_invocation(
    payload: Any, schema: Sequence[Column], max_rows: int
) -> tuple[Columns, int]:
    """An MLflow `/invocations` body (dataframe_split or dataframe_records)."""
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a JSON object with 'dataframe_split' or ...")
    if "dataframe_split" in payload:
        return columns_from_split(payload["dataframe_split"], schema, max_rows)
    if "dataframe_records" in payload:
        return columns_from_records(payload["dataframe_records"], schema, max_rows)
    raise RequestError(
        422,
        f"unknown request format (keys {sorted(payload)[:5]}); send 'dataframe_split' "
        "({'columns': [...], 'data': [[...]]}) or 'dataframe_records' ([{...}])",
    )


def columns_from_v2(payload: Any, schema: Sequence[Column], max_rows: int) -> tuple[Columns, int]:
    """An Open Inference Protocol v2 request: one 1-d input tensor per column."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise RequestError(422, "a v2 inference request needs an 'inputs' list of tensors")
    given: dict[str, list] = {}
    for i, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(422, f"inputs[{i}] must be an object with a 'name'")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise RequestError(422, f"inputs[{i}] ({tensor['name']!r}): 'data' must be a list")
        given[tensor["name"]] = data
    lengths = {name: len(values) for name, values in given.items()}
    if len(set(lengths.values())) > 1:
        raise RequestError(422, f"input tensors differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    _check_rows(n, max_rows)
    return typed_columns(given, n, schema), n


def rows_from_split(split: Any, schema: Sequence[Column]) -> pd.DataFrame:
    """A checked frame from `dataframe_split` (the model's input example uses it)."""
    columns, _ = columns_from_split(split, schema, max_rows=1_000_000)
    return pd.DataFrame(columns)


# The model's answer: one array per output column, in the signature's order.
Answer = Mapping[str, np.ndarray]


def invocation_response(answer: Answer) -> dict:
    """MLflow's answer shape: one record per row."""
    names = list(answer)
    cols = [np.asarray(answer[name]).tolist() for name in names]
    if len(names) == 2:  # probability and decision: the common shape, built directly
        first, second = names
        rows = [{first: a, second: b} for a, b in zip(*cols, strict=True)]
        return {"predictions": rows}
    return {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]}


def v2_response(model: str, version: str, answer: Answer, request_id: Any) -> dict:
    """An Open Inference Protocol v2 response: one output tensor per output column."""
    outputs = []
    for name in answer:
        values = np.asarray(answer[name])
        datatype = "BOOL" if values.dtype == bool else "FP64"
        outputs.append(
            {"name": name, "shape": [len(values)], "datatype": datatype, "data": values.tolist()}
        )
    out = {"model_name": model, "model_version": version, "outputs": outputs}
    if request_id is not None:
        out["id"] = request_id
    return out

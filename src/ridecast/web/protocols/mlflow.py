"""MLflow's scoring protocol: ``POST /invocations`` → ``{"predictions": [...]}``.

JSON bodies carry exactly one of ``dataframe_split`` (``{"columns": [...], "data": [[...]]}``),
``dataframe_records`` (a list of row objects), ``instances`` or ``inputs`` (row objects, or an
object of columns); ``params`` is accepted and ignored. ``text/csv`` bodies have a header row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

from ridecast.web import validation
from ridecast.web.protocols.seed import loads
from ridecast.web.validation import InvalidInput, RideBatch

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse(body: bytes, content_type: str, max_rides: int) -> RideBatch:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/csv":
        return _csv(body, max_rides)
    if kind not in ("", "application/json", "application/x-www-form-urlencoded"):
        raise InvalidInput.one(
            ("header", "content-type"),
            f"content type {kind!r} is not supported; send application/json or text/csv",
            "unsupported_media_type",
            status=415,
        )
    obj = loads(body)
    if type(obj) is not dict:
        raise InvalidInput.one(("body",), _expected("a JSON object"), "model_attributes_type")
    given = [k for k in FORMATS if k in obj]
    if len(given) != 1:
        found = f"found {given}" if given else f"found keys {sorted(obj)[:8]}"
        raise InvalidInput.one(("body",), _expected(f"exactly one format key ({found})"), "format")
    key = given[0]
    value = obj[key]
    if key == "dataframe_split":
        return _split(value, max_rides)
    if type(value) is list:
        return _records(key, value, max_rides)
    if type(value) is dict:
        return _columns(key, value, max_rides)
    raise InvalidInput.one(
        ("body", key), f"{key} must be a list of row objects or an object of columns", "type"
    )


def _expected(what: str) -> str:
    return f"expected {what}: one of {', '.join(FORMATS)}, as MLflow's scoring server accepts"


def _records(key: str, rows: list[Any], max_rides: int) -> RideBatch:
    try:
        return validation.rides(rows, max_rides)
    except InvalidInput as exc:
        for p in exc.problems:
            p["loc"] = ["body", key, *p["loc"][1:]]
        raise


def _columns(key: str, value: dict[str, Any], max_rides: int) -> RideBatch:
    for name, column in value.items():
        if type(column) is not list:
            raise InvalidInput.one(("body", key, name), f"column {name} must be a list", "type")
    return validation.columns(value, lambda name, row: _loc(("body", key, name), row), max_rides)


def _loc(prefix: tuple[Any, ...], row: int | None) -> tuple[Any, ...]:
    return prefix if row is None else (*prefix, row)


def _split(value: Any, max_rides: int) -> RideBatch:
    if type(value) is not dict or type(value.get("columns")) is not list:
        raise InvalidInput.one(
            ("body", "dataframe_split"),
            'dataframe_split must be {"columns": [...], "data": [[...], ...]}',
            "type",
        )
    names: list[Any] = value["columns"]
    data = value.get("data")
    if type(data) is not list:
        raise InvalidInput.one(
            ("body", "dataframe_split", "data"), "data must be a list of rows", "type"
        )
    validation.check_count(len(data), max_rides)
    width = len(names)
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != width:
            raise InvalidInput.one(
                ("body", "dataframe_split", "data", i),
                f"row {i} must be a list of {width} values, one per column {names}",
                "type",
            )
    cols = {str(n): [row[j] for row in data] for j, n in enumerate(names)}
    return validation.columns(
        cols, lambda name, row: _loc(("body", "dataframe_split", "data", name), row), max_rides
    )


def _csv(body: bytes, max_rides: int) -> RideBatch:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput.one(("body",), "the CSV body is not UTF-8 text", "csv") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        rows = list(reader)
    except (StopIteration, csv.Error) as exc:
        raise InvalidInput.one(
            ("body",), f"expected CSV with a header row ({exc or 'empty body'})", "csv"
        ) from None
    rows = [r for r in rows if r]
    validation.check_count(len(rows), max_rides)
    names = [h.strip() for h in header]
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise InvalidInput.one(
                ("body", i),
                f"CSV row {i} has {len(row)} values; the header has {len(names)}",
                "csv",
            )
        for name, text_value in zip(names, row, strict=True):
            cols[name].append(_csv_value(name, text_value))
    return validation.columns(cols, lambda name, row: _loc(("body", name), row), max_rides)


def _csv_value(name: str, text: str) -> Any:
    text = text.strip()
    if name in ("ride_id", "user_id") or text == "":
        return text or None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # validation names the field and row


def encode(values: Sequence[float]) -> bytes:
    return orjson.dumps({"predictions": values})


OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "examples": {
                    "dataframe_split": {
                        "value": {
                            "dataframe_split": {
                                "columns": ["PULocationID", "DOLocationID", "trip_distance"],
                                "data": [[10, 50, 4.2]],
                            }
                        }
                    },
                    "dataframe_records": {
                        "value": {
                            "dataframe_records": [
                                {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2}
                            ]
                        }
                    },
                    "inputs": {
                        "value": {
                            "inputs": {
                                "PULocationID": [10],
                                "DOLocationID": [50],
                                "trip_distance": [4.2],
                            }
                        }
                    },
                },
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "PULocationID,DOLocationID,trip_distance\n10,50,4.2\n",
            },
        },
    },
    "responses": {
        "200": {
            "description": "One prediction per row, in order.",
            "content": {"application/json": {"example": {"predictions": [27.3]}}},
        },
        "415": {"description": "Content type other than JSON or CSV."},
        "422": {"description": "Invalid rows: `detail[].loc` names the row and field."},
    },
}


def error_body(exc: InvalidInput) -> bytes:
    """MLflow's error shape plus the field-level detail."""
    return orjson.dumps(
        {
            "error_code": "INVALID_PARAMETER_VALUE" if exc.status != 415 else "BAD_REQUEST",
            "message": str(exc),
            "detail": exc.problems,
        }
    )

"""The Open Inference Protocol v2 (KServe, MLServer, Triton), for tabular requests.

An infer request carries one input per column (``content_type: pd``, as MLServer's pandas codec
sends it): ``PULocationID`` and ``DOLocationID`` (INT64/INT32, or BYTES holding digits),
``trip_distance`` (FP64/FP32, or BYTES), optional ``ride_id``/``user_id`` (BYTES or INT64).
Triton's binary tensor extension (``Inference-Header-Content-Length``) is understood too. The
response has one FP64 output named after the model's target (``duration``, ``tip``, ``cost``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from ridecast import __version__
from ridecast.web import validation
from ridecast.web.protocols.seed import loads
from ridecast.web.validation import InvalidInput, RideBatch

NUMERIC = {
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP32": "<f4",
    "FP64": "<f8",
}
FIELDS = ("PULocationID", "DOLocationID", "trip_distance", "ride_id", "user_id")


def server_metadata() -> dict[str, Any]:
    return {"name": "ridecast", "version": __version__, "extensions": ["binary_tensor_data"]}


def model_metadata(name: str, version: str, target: str) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": "ridecast",
        "inputs": [
            {"name": "PULocationID", "datatype": "INT64", "shape": [-1]},
            {"name": "DOLocationID", "datatype": "INT64", "shape": [-1]},
            {"name": "trip_distance", "datatype": "FP64", "shape": [-1]},
        ],
        "outputs": [{"name": target, "datatype": "FP64", "shape": [-1]}],
        "parameters": {"content_type": "pd"},
    }


def _flatten(data: Any) -> list[Any]:
    if type(data) is not list:
        return [data]
    if all(type(v) is not list for v in data):
        return data
    flat: list[Any] = []
    for v in data:
        flat.extend(_flatten(v))
    return flat


def _bytes_value(name: str, value: Any) -> Any:
    """A BYTES element: a string (or base64-less raw text) holding a number or an id."""
    if type(value) is bytes:
        value = value.decode("utf-8", errors="replace")
    if name in ("ride_id", "user_id") or type(value) is not str:
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value  # validation names the field
    return number if math.isfinite(number) else value


def _binary_column(raw: memoryview, datatype: str, count: int, loc: tuple[Any, ...]) -> list[Any]:
    if datatype in NUMERIC:
        dtype = np.dtype(NUMERIC[datatype])
        if len(raw) != dtype.itemsize * count:
            raise InvalidInput.one(
                loc,
                f"binary data has {len(raw)} bytes; {count} {datatype} need "
                f"{dtype.itemsize * count}",
                "binary",
            )
        return np.frombuffer(raw, dtype=dtype).tolist()  # type: ignore[no-any-return]
    if datatype == "BYTES":
        out: list[Any] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise InvalidInput.one(loc, "truncated BYTES element length", "binary")
            (length,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + length > len(raw):
                raise InvalidInput.one(loc, "truncated BYTES element", "binary")
            out.append(bytes(raw[pos : pos + length]))
            pos += length
        return out
    raise InvalidInput.one(loc, f"datatype {datatype} is not supported", "datatype")


def parse_infer(body: bytes, header_length: int | None, max_rides: int) -> tuple[RideBatch, Any]:
    """An infer request → (rides, request id)."""
    binary = memoryview(b"")
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidInput.one(
                ("header", "inference-header-content-length"),
                f"Inference-Header-Content-Length {header_length} does not fit a "
                f"{len(body)}-byte body",
                "binary",
            )
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    obj = loads(body)
    if type(obj) is not dict or type(obj.get("inputs")) is not list:
        raise InvalidInput.one(
            ("body", "inputs"),
            'expected {"inputs": [{"name": ..., "shape": [n], "datatype": ..., "data": [...]}]}',
            "missing",
        )
    request_id = obj.get("id")
    if request_id is not None and type(request_id) is not str:
        request_id = str(request_id)
    columns: dict[str, list[Any]] = {}
    offset = 0
    for i, tensor in enumerate(obj["inputs"]):
        loc: tuple[Any, ...] = ("body", "inputs", i)
        if type(tensor) is not dict or type(tensor.get("name")) is not str:
            raise InvalidInput.one(loc, "each input needs a name", "missing")
        name = tensor["name"]
        datatype = tensor.get("datatype")
        if type(datatype) is not str:
            raise InvalidInput.one((*loc, "datatype"), f"input {name} needs a datatype", "missing")
        shape = tensor.get("shape")
        if (
            type(shape) is not list
            or not shape
            or not all(type(s) is int and s >= 0 for s in shape)
        ):
            raise InvalidInput.one(
                (*loc, "shape"), f"input {name} needs a shape of non-negative integers", "shape"
            )
        count = math.prod(shape)
        if count > max_rides:
            validation.check_count(count, max_rides)
        params = tensor.get("parameters") if type(tensor.get("parameters")) is dict else {}
        size = params.get("binary_data_size") if params else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput.one(
                    (*loc, "parameters", "binary_data_size"),
                    f"input {name}: binary_data_size {size!r} does not fit the binary part",
                    "binary",
                )
            data = _binary_column(binary[offset : offset + size], datatype, count, loc)
            offset += size
        elif "data" in tensor:
            data = _flatten(tensor["data"])
        else:
            raise InvalidInput.one((*loc, "data"), f"input {name} has no data", "missing")
        if len(data) != count:
            raise InvalidInput.one(
                (*loc, "data"), f"input {name} has {len(data)} values but shape {shape}", "shape"
            )
        if name not in FIELDS:
            continue  # extra columns are ignored, as in the other protocols
        if datatype == "BYTES":
            data = [_bytes_value(name, v) for v in data]
        elif datatype not in NUMERIC:
            raise InvalidInput.one(
                (*loc, "datatype"),
                f"input {name}: datatype {datatype!r} is not supported; use INT64, FP64 or BYTES",
                "datatype",
            )
        columns[name] = data
    index = {c: i for i, c in enumerate(t.get("name") for t in obj["inputs"] if type(t) is dict)}
    batch = validation.columns(
        columns,
        lambda name, row: (
            ("body", "inputs", index.get(name, name), "data", row)
            if row is not None
            else ("body", "inputs", name)
        ),
        max_rides,
    )
    return batch, request_id


def encode_infer(
    name: str, version: str, target: str, values: Sequence[float], request_id: Any
) -> bytes:
    out: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "outputs": [{"name": target, "shape": [len(values)], "datatype": "FP64", "data": values}],
    }
    if request_id is not None:
        out["id"] = request_id
    return orjson.dumps(out)


def error_body(message: str, detail: list[dict[str, Any]] | None = None) -> bytes:
    out: dict[str, Any] = {"error": message}
    if detail:
        out["detail"] = detail
    return orjson.dumps(out)


OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["inputs"]},
                "example": {
                    "parameters": {"content_type": "pd"},
                    "inputs": [
                        {"name": "PULocationID", "shape": [1], "datatype": "INT64", "data": [10]},
                        {"name": "DOLocationID", "shape": [1], "datatype": "INT64", "data": [50]},
                        {"name": "trip_distance", "shape": [1], "datatype": "FP64", "data": [4.2]},
                    ],
                },
            }
        },
    },
    "responses": {
        "200": {"description": "One FP64 output named after the target (duration, tip, cost)."},
        "404": {"description": "No such model or version served."},
        "422": {"description": "Invalid tensors: `detail[].loc` names the input and row."},
    },
}

"""The shape of TLC trip data: taxi types, months, file names, and the published parquet schemas.

Everything here is pure and cheap; parsing functions raise :class:`ridecast.errors.DataError` with a
one-line message that names the bad value and what was expected.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from ridecast.errors import DataError


class TaxiType(enum.StrEnum):
    """The TLC trip record families ridecast reads (``fhvhv`` is not supported).

    A ``str`` subclass: ``TaxiType.GREEN == "green"`` and ``str(TaxiType.GREEN) == "green"``.
    """

    GREEN = "green"
    YELLOW = "yellow"
    FHV = "fhv"


def parse_taxi_type(value: str | TaxiType) -> TaxiType:
    """``"green"``, ``"Yellow"``, ``" fhv "`` -> :class:`TaxiType`; DataError lists valid ones."""
    if isinstance(value, TaxiType):
        return value
    try:
        return TaxiType(str(value).strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in TaxiType)
        raise DataError(f"unknown taxi type {value!r}; expected one of: {valid}") from None


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month. Orders chronologically; ``str(Month(2025, 1)) == "2025-01"``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise DataError(f"month must be 01..12, got {self.month} (in {self.year})")
        if not 1 <= self.year <= 9999:
            raise DataError(f"year must be 1..9999, got {self.year}")

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> Month:
        """The following month (December rolls over to January of the next year)."""
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def prev(self) -> Month:
        """The preceding month (January rolls back to December of the previous year)."""
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    @property
    def start(self) -> datetime:
        """Midnight of the first day (naive, like TLC timestamps); inclusive."""
        return datetime(self.year, self.month, 1)

    @property
    def end(self) -> datetime:
        """Midnight of the first day of the next month; exclusive, so ``start <= t < end``."""
        return self.next().start

    @property
    def days(self) -> int:
        """Number of days in the month."""
        return (self.end - self.start).days


_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(value: str | Month) -> Month:
    """``"2025-01"`` -> ``Month(2025, 1)``; DataError on anything else (``"2025-13"``, ``jan``)."""
    if isinstance(value, Month):
        return value
    text = str(value).strip()
    match = _MONTH_RE.match(text)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise DataError(f"month must be YYYY-MM with month 01..12, got {value!r}")
    return Month(int(match.group(1)), int(match.group(2)))


def month_range(start: Month, end: Month) -> list[Month]:
    """Every month from ``start`` to ``end``, both included; DataError if ``end < start``."""
    if end < start:
        raise DataError(f"month range is backwards: {start} .. {end}; expected start <= end")
    months = [start]
    while months[-1] < end:
        months.append(months[-1].next())
    return months


def month_file_name(taxi_type: TaxiType | str, month: Month | str) -> str:
    """TLC's file name for a month: ``green_tripdata_2025-01.parquet``."""
    return f"{parse_taxi_type(taxi_type).value}_tripdata_{parse_month(month)}.parquet"


# The schemas of the TLC monthly parquet files as published for 2025 (read from the files'
# footers). TLC rewrote its files from 2023-02 on: int32 vendor/zone ids, int64 codes with nulls,
# large_string flags, microsecond timestamps; 2025 added ``cbd_congestion_fee`` to yellow and
# green (fhv did not get it). Every field is nullable, as in the files. Older years differ in
# case (``airport_fee``) and dtypes (double ids); the readers accept those too.
_TS = pa.timestamp("us")

TLC_SCHEMAS: dict[TaxiType, pa.Schema] = {
    TaxiType.YELLOW: pa.schema(
        [
            ("VendorID", pa.int32()),
            ("tpep_pickup_datetime", _TS),
            ("tpep_dropoff_datetime", _TS),
            ("passenger_count", pa.int64()),
            ("trip_distance", pa.float64()),
            ("RatecodeID", pa.int64()),
            ("store_and_fwd_flag", pa.large_string()),
            ("PULocationID", pa.int32()),
            ("DOLocationID", pa.int32()),
            ("payment_type", pa.int64()),
            ("fare_amount", pa.float64()),
            ("extra", pa.float64()),
            ("mta_tax", pa.float64()),
            ("tip_amount", pa.float64()),
            ("tolls_amount", pa.float64()),
            ("improvement_surcharge", pa.float64()),
            ("total_amount", pa.float64()),
            ("congestion_surcharge", pa.float64()),
            ("Airport_fee", pa.float64()),
            ("cbd_congestion_fee", pa.float64()),
        ]
    ),
    TaxiType.GREEN: pa.schema(
        [
            ("VendorID", pa.int32()),
            ("lpep_pickup_datetime", _TS),
            ("lpep_dropoff_datetime", _TS),
            ("store_and_fwd_flag", pa.large_string()),
            ("RatecodeID", pa.int64()),
            ("PULocationID", pa.int32()),
            ("DOLocationID", pa.int32()),
            ("passenger_count", pa.int64()),
            ("trip_distance", pa.float64()),
            ("fare_amount", pa.float64()),
            ("extra", pa.float64()),
            ("mta_tax", pa.float64()),
            ("tip_amount", pa.float64()),
            ("tolls_amount", pa.float64()),
            ("ehail_fee", pa.float64()),
            ("improvement_surcharge", pa.float64()),
            ("total_amount", pa.float64()),
            ("payment_type", pa.int64()),
            ("trip_type", pa.int64()),
            ("congestion_surcharge", pa.float64()),
            ("cbd_congestion_fee", pa.float64()),
        ]
    ),
    TaxiType.FHV: pa.schema(
        [
            ("dispatching_base_num", pa.large_string()),
            ("pickup_datetime", _TS),
            ("dropOff_datetime", _TS),
            ("PUlocationID", pa.int64()),
            ("DOlocationID", pa.int64()),
            ("SR_Flag", pa.int64()),
            ("Affiliated_base_number", pa.large_string()),
        ]
    ),
}

# Column of each type's pickup/dropoff time, as spelled in the 2025 files.
PICKUP_COLUMNS: dict[TaxiType, str] = {
    TaxiType.GREEN: "lpep_pickup_datetime",
    TaxiType.YELLOW: "tpep_pickup_datetime",
    TaxiType.FHV: "pickup_datetime",
}
DROPOFF_COLUMNS: dict[TaxiType, str] = {
    TaxiType.GREEN: "lpep_dropoff_datetime",
    TaxiType.YELLOW: "tpep_dropoff_datetime",
    TaxiType.FHV: "dropOff_datetime",
}

# What every reader returns, in this order (plus ``source_row``); see ``readers.read_trips``.
CANONICAL_COLUMNS: list[str] = [
    "pickup_datetime",
    "dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
    "duration",
    "fare_amount",
    "tip_amount",
    "total_amount",
    "payment_type",
]

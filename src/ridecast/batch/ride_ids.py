"""Stable ride ids: the same input row gets the same id on every run, so reruns line up.

``ride_id`` is a decimal-readable int64: ``T YYYY MM RRRRRRRRRR`` =
``T * 10**16 + YYYY * 10**12 + MM * 10**10 + source_row``, where T is 1 (green), 2 (yellow) or
3 (fhv) and ``source_row`` is the row's position in the month's input (0-based, counting on across
files in sorted order). Row 1,234 of green 2025-02 is ``12025020000001234``. A month's ids form one
contiguous range, so a sink replaces a month with a range delete on its primary key.
"""

from __future__ import annotations

import numpy as np

from ridecast.data.schema import Month, TaxiType

TAXI_CODES: dict[TaxiType, int] = {TaxiType.GREEN: 1, TaxiType.YELLOW: 2, TaxiType.FHV: 3}
ROWS_PER_MONTH = 10**10


def month_base(taxi_type: TaxiType, month: Month) -> int:
    """The id of row 0 of the month."""
    return TAXI_CODES[taxi_type] * 10**16 + month.year * 10**12 + month.month * ROWS_PER_MONTH


def month_range(taxi_type: TaxiType, month: Month) -> tuple[int, int]:
    """``[low, high)``: every ride id the month can have."""
    base = month_base(taxi_type, month)
    return base, base + ROWS_PER_MONTH


def ride_ids(taxi_type: TaxiType, month: Month, source_row: np.ndarray) -> np.ndarray:
    return np.asarray(source_row, dtype=np.int64) + np.int64(month_base(taxi_type, month))

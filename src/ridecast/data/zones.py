"""The TLC taxi zone lookup table (265 zones), shipped as package data.

``VALID_ZONE_IDS`` and ``MAX_ZONE_ID`` are read once at import with the stdlib ``csv`` module so
that light callers (request validation) need not import pandas.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ZONE_FILE = "taxi_zone_lookup.csv"
ZONE_COLUMNS = ["LocationID", "Borough", "Zone", "service_zone"]

# Zones with fixed roles in the rate card and in the data.
EWR_ZONE_ID = 1
JFK_ZONE_ID = 132
LGA_ZONE_ID = 138
AIRPORT_ZONE_IDS: frozenset[int] = frozenset({EWR_ZONE_ID, JFK_ZONE_ID, LGA_ZONE_ID})
# 264 "NV" and 265 "NA": the TLC's codes for an unknown or outside-NYC location.
UNKNOWN_ZONE_IDS: frozenset[int] = frozenset({264, 265})


def _zone_csv_text() -> str:
    return resources.files(__package__).joinpath(ZONE_FILE).read_text(encoding="utf-8")


def _read_zone_ids() -> frozenset[int]:
    rows = csv.DictReader(io.StringIO(_zone_csv_text()))
    return frozenset(int(row["LocationID"]) for row in rows)


VALID_ZONE_IDS: frozenset[int] = _read_zone_ids()
MAX_ZONE_ID: int = max(VALID_ZONE_IDS)


@lru_cache(maxsize=1)
def _zones_frame() -> pd.DataFrame:
    import pandas as pd

    # keep_default_na=False: zone 265 is literally named "NA" and its service zone "N/A".
    frame = pd.read_csv(
        io.StringIO(_zone_csv_text()), dtype={"LocationID": "int64"}, keep_default_na=False
    )
    return frame[ZONE_COLUMNS]


def load_zones() -> pd.DataFrame:
    """The lookup table: ``LocationID`` (int64, 1..265), ``Borough``, ``Zone``, ``service_zone``.

    Rows are in LocationID order. A fresh copy each call, so callers may modify it.
    """
    return _zones_frame().copy()

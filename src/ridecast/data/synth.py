"""Realistic synthetic TLC months, written with the exact schema of the published parquet files.

The generator is a small model of the city, vectorized end to end (no per-row Python):

- *geography*: every zone gets a fixed pseudo-location in its borough (Manhattan zones along the
  island, airports where they are), so a zone pair always has the same road distance;
- *demand*: skewed pickup popularity per taxi type (Manhattan's Yellow Zone for yellow cabs,
  Harlem and the outer boroughs for green), destinations by a gravity model (attractive and near
  zones first, airports from everywhere), pickup times by weekday and hour of day;
- *traffic*: duration = distance x pace, where the pace depends on the zone pair (congestion), the
  hour and weekday (rush hours slow, nights fast), and long trips run faster (highways), plus noise;
- *money*: the TLC yellow/green rate card (initial $3.00, $0.70 per 1/5 mile or per slow minute,
  JFK flat $70, surcharges, tolls); tips on card payments only; ``total_amount`` is the sum;
- *dirt*: the nulls, zero distances, negative and hours-long durations, distance outliers, refund
  rows and out-of-month timestamps that real files have.

The geography and zone popularity use a fixed seed, so every month and every ``seed`` describe the
same city: a model trained on one synthetic month generalises to the next. ``seed`` (with the taxi
type and month) only drives the rides; the same arguments give an identical table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ridecast.data.schema import (
    TLC_SCHEMAS,
    Month,
    TaxiType,
    month_file_name,
    parse_month,
    parse_taxi_type,
)
from ridecast.data.zones import (
    AIRPORT_ZONE_IDS,
    EWR_ZONE_ID,
    JFK_ZONE_ID,
    LGA_ZONE_ID,
    MAX_ZONE_ID,
    UNKNOWN_ZONE_IDS,
    load_zones,
)
from ridecast.errors import DataError

_DEFAULT_ROWS = {TaxiType.GREEN: 60_000, TaxiType.YELLOW: 300_000, TaxiType.FHV: 100_000}

# The city never changes between months or seeds: only the rides do.
_GEOGRAPHY_SEED = 20_250_101
_US_PER_MINUTE = 60_000_000
_US_PER_HOUR = 60 * _US_PER_MINUTE
_US_PER_DAY = 24 * _US_PER_HOUR
_ZONES = MAX_ZONE_ID + 1  # arrays are indexed by LocationID; index 0 is unused

# Borough codes used in the geography arrays.
_MANHATTAN, _BROOKLYN, _QUEENS, _BRONX, _STATEN, _EWR, _UNKNOWN = range(7)
_BOROUGH_CODES = {
    "Manhattan": _MANHATTAN,
    "Brooklyn": _BROOKLYN,
    "Queens": _QUEENS,
    "Bronx": _BRONX,
    "Staten Island": _STATEN,
    "EWR": _EWR,
    "Unknown": _UNKNOWN,
}

# Manhattan zones: (miles north of the Battery along the island, offset across it, west -1 .. east
# +1). Road distances in Manhattan follow the avenues, so a position along the island is what
# matters; the rest of the city is placed by borough boxes below.
_MANHATTAN_POSITIONS: dict[int, tuple[float, float]] = {
    12: (0.0, -0.2), 88: (0.3, 0.1), 13: (0.5, -0.6), 261: (0.6, -0.3), 87: (0.7, 0.2),
    209: (0.8, 0.5), 231: (1.1, -0.3), 45: (1.3, 0.3), 232: (1.3, 0.8), 125: (1.6, -0.6),
    211: (1.8, -0.1), 144: (1.8, 0.3), 148: (1.9, 0.8), 114: (2.2, -0.2), 249: (2.4, -0.6),
    4: (2.4, 1.0), 79: (2.5, 0.5), 113: (2.6, -0.1), 158: (2.8, -0.8), 234: (2.9, 0.1),
    224: (3.0, 0.8), 68: (3.2, -0.3), 90: (3.3, 0.1), 107: (3.3, 0.5), 246: (3.6, -0.8),
    137: (3.6, 0.7), 186: (3.9, -0.3), 164: (4.0, 0.1), 170: (4.0, 0.5), 100: (4.2, -0.2),
    230: (4.5, -0.1), 233: (4.5, 0.8), 48: (4.6, -0.4), 50: (4.7, -0.8), 161: (4.7, 0.2),
    162: (4.8, 0.5), 163: (5.0, -0.1), 229: (5.1, 0.8), 142: (5.5, -0.3), 143: (5.5, -0.7),
    202: (5.6, 1.3), 237: (5.7, 0.4), 141: (5.9, 0.3), 140: (6.0, 0.8), 239: (6.2, -0.5),
    43: (6.5, 0.0), 236: (6.6, 0.4), 263: (6.8, 0.6), 262: (6.8, 1.0), 238: (6.9, -0.5),
    24: (7.4, -0.5), 75: (7.5, 0.7), 151: (7.6, -0.3), 166: (8.0, -0.6), 41: (8.1, 0.0),
    74: (8.2, 0.7), 194: (8.3, 1.6), 152: (8.6, -0.6), 42: (8.9, 0.1), 116: (9.3, -0.4),
    244: (10.0, -0.2), 120: (10.3, 0.3), 243: (10.8, -0.1), 127: (11.6, 0.0),
    128: (12.0, -0.4), 153: (12.3, 0.3), 103: (-0.9, -0.8), 104: (-0.7, -0.4),
    105: (-0.6, -1.1),
}  # fmt: skip
# Manhattan's avenues run about 29 degrees east of true north.
_AXIS = np.array([0.485, 0.875])
_ACROSS = np.array([0.875, -0.485])
# Borough boxes in miles east/north of the Battery (from the boroughs' latitude/longitude spans).
_BOROUGH_BOXES: dict[int, tuple[float, float, float, float]] = {
    _BROOKLYN: (-1.2, 8.0, -9.0, 1.5),
    _QUEENS: (4.0, 15.5, -3.5, 6.5),
    _BRONX: (4.8, 12.4, 7.0, 13.6),
    _STATEN: (-12.0, -2.5, -14.0, -4.5),
}
_FIXED_POSITIONS = {JFK_ZONE_ID: (12.5, -4.3), LGA_ZONE_ID: (7.6, 5.1), EWR_ZONE_ID: (-8.3, -0.9)}
# Manhattan below 60th Street: the Congestion Relief Zone of 2025 (cbd_congestion_fee).
_CBD_MAX_MILES_NORTH = 5.4
# Manhattan below 96th Street: where the 2019 congestion surcharge applies.
_CONGESTION_MAX_MILES_NORTH = 7.2

# Hand-picked hot spots (pickup weight multipliers), from the published monthly rankings.
_YELLOW_HOT = {
    237: 3.0, 161: 3.0, 236: 2.7, 162: 2.5, 186: 2.3, 230: 2.3, 142: 2.0, 170: 2.0, 163: 1.9,
    239: 1.9, 48: 1.8, 68: 1.7, 234: 1.7, 79: 1.6, 249: 1.5, 107: 1.5, 141: 1.4, 140: 1.4,
    164: 1.4, 238: 1.3, 100: 1.3, 90: 1.2, 113: 1.2, 263: 1.2, 231: 1.1,
}  # fmt: skip
_GREEN_HOT = {
    74: 30.0, 75: 18.0, 41: 11.0, 42: 6.0, 166: 6.0, 95: 5.0, 82: 5.0, 7: 5.0, 97: 4.0,
    65: 4.0, 244: 3.5, 116: 3.5, 129: 3.5, 260: 3.0, 43: 2.5, 152: 2.5, 181: 2.5, 255: 2.5,
    33: 2.5, 25: 2.0, 226: 2.0, 61: 2.0, 17: 2.0, 24: 2.0, 223: 2.0, 134: 1.8, 92: 1.8,
}  # fmt: skip

# Share of rides per hour of day (index 0..23), weekdays and weekends, per taxi type.
_HOURLY = {
    TaxiType.YELLOW: (
        [1.2, 0.7, 0.45, 0.3, 0.35, 0.6, 1.6, 3.2, 4.3, 4.4, 4.4, 4.6,
         4.9, 5.0, 5.3, 5.6, 5.8, 6.5, 7.0, 6.4, 5.7, 5.5, 4.9, 3.3],
        [3.8, 3.0, 2.2, 1.4, 0.8, 0.6, 0.7, 1.1, 1.8, 2.9, 4.0, 4.8,
         5.3, 5.5, 5.6, 5.7, 5.7, 5.9, 6.0, 5.8, 5.2, 5.0, 5.0, 4.4],
    ),
    TaxiType.GREEN: (
        [1.0, 0.6, 0.4, 0.35, 0.5, 1.0, 2.2, 4.0, 5.0, 5.0, 5.0, 5.1,
         5.3, 5.6, 6.2, 6.8, 7.2, 7.2, 6.5, 5.2, 4.0, 3.3, 2.8, 2.0],
        [2.6, 2.0, 1.5, 1.0, 0.7, 0.7, 1.0, 1.6, 2.5, 3.6, 4.6, 5.3,
         5.7, 5.9, 6.0, 6.0, 5.9, 5.8, 5.4, 4.9, 4.3, 3.9, 3.6, 3.2],
    ),
    TaxiType.FHV: (
        [1.5, 0.9, 0.7, 0.7, 1.0, 1.8, 3.2, 5.0, 5.6, 5.0, 4.6, 4.6,
         4.7, 4.8, 5.0, 5.4, 5.8, 6.0, 5.8, 5.2, 4.5, 4.1, 3.5, 2.5],
        [3.0, 2.4, 1.8, 1.3, 1.0, 1.0, 1.3, 2.0, 2.8, 3.6, 4.4, 5.0,
         5.3, 5.5, 5.6, 5.7, 5.7, 5.7, 5.5, 5.1, 4.6, 4.3, 4.0, 3.6],
    ),
}  # fmt: skip
# Relative volume Monday..Sunday.
_WEEKDAY_VOLUME = {
    TaxiType.YELLOW: [0.88, 0.98, 1.03, 1.07, 1.06, 1.00, 0.86],
    TaxiType.GREEN: [1.00, 1.02, 1.03, 1.05, 1.05, 0.92, 0.82],
    TaxiType.FHV: [1.00, 1.00, 1.00, 1.02, 1.08, 0.95, 0.85],
}
# Minutes per mile relative to the zone pair's usual pace, by hour (weekday, weekend).
_PACE_BY_HOUR = (
    [0.72, 0.70, 0.68, 0.68, 0.70, 0.76, 0.90, 1.12, 1.22, 1.18, 1.10, 1.08,
     1.08, 1.08, 1.12, 1.20, 1.26, 1.26, 1.18, 1.05, 0.95, 0.88, 0.82, 0.76],
    [0.74, 0.72, 0.70, 0.68, 0.68, 0.68, 0.70, 0.74, 0.80, 0.88, 0.96, 1.02,
     1.06, 1.08, 1.08, 1.08, 1.08, 1.06, 1.04, 1.00, 0.96, 0.92, 0.86, 0.80],
)  # fmt: skip


@dataclass(frozen=True)
class _City:
    """Fixed facts about the zones, indexed by LocationID (index 0 unused)."""

    borough: np.ndarray  # int, _MANHATTAN ..
    xy: np.ndarray  # (zones, 2) miles east/north of the Battery
    road_miles: np.ndarray  # (zones, zones) usual road distance of a pair
    pace: np.ndarray  # (zones, zones) usual minutes per mile of a pair
    congestion_zone: np.ndarray  # bool: Manhattan below 96th St
    cbd: np.ndarray  # bool: Manhattan below 60th St
    affluence: np.ndarray  # standard-normal-ish score: card payments and tips rise with it
    tip_generosity: np.ndarray  # float multiplier on tip percentages, by pickup zone


@lru_cache(maxsize=1)
def _city() -> _City:
    rng = np.random.default_rng(_GEOGRAPHY_SEED)
    zones = load_zones()
    ids = zones["LocationID"].to_numpy()
    borough = np.full(_ZONES, _UNKNOWN, dtype=np.int64)
    borough[ids] = [_BOROUGH_CODES.get(b, _UNKNOWN) for b in zones["Borough"]]
    xy = np.zeros((_ZONES, 2))
    miles_north = np.full(_ZONES, np.inf)
    for zone, (along, across) in _MANHATTAN_POSITIONS.items():
        xy[zone] = along * _AXIS + across * 0.9 * _ACROSS
        miles_north[zone] = along
    for code, (x0, x1, y0, y1) in _BOROUGH_BOXES.items():
        members = np.flatnonzero(borough == code)
        xy[members, 0] = rng.uniform(x0, x1, members.size)
        xy[members, 1] = rng.uniform(y0, y1, members.size)
    for zone, position in _FIXED_POSITIONS.items():
        xy[zone] = position
    # Unknown zones (264/265) sit mid-city; rides from/to them get a random distance later.
    xy[list(UNKNOWN_ZONE_IDS)] = (4.0, 3.0)

    straight = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    # Streets are not straight lines: a detour factor, plus getting in and out of the zones.
    road = 1.3 * straight + 0.4
    zone_size = rng.uniform(0.5, 1.3, _ZONES)
    road[np.arange(_ZONES), np.arange(_ZONES)] = zone_size  # trips within one zone

    # Minutes per mile: Manhattan's grid is slow, the outer boroughs less so; each zone adds its
    # own congestion (bridges, narrow streets) and each pair a little more.
    in_manhattan = borough == _MANHATTAN
    base_pace = np.where(in_manhattan, 5.2, 3.6)
    pace = np.sqrt(base_pace[:, None] * base_pace[None, :])
    zone_congestion = rng.lognormal(0.0, 0.12, _ZONES)
    pace *= zone_congestion[:, None] * zone_congestion[None, :]
    pace *= rng.lognormal(0.0, 0.08, (_ZONES, _ZONES))
    # Long trips use highways: the pace falls towards half for trips of 15+ miles.
    pace *= 0.5 + 0.5 * np.exp(-road / 7.0)

    affluence = rng.normal(0.0, 1.0, _ZONES) + np.where(miles_north <= 7.5, 0.8, 0.0)
    return _City(
        borough=borough,
        xy=xy,
        road_miles=road,
        pace=pace,
        congestion_zone=miles_north <= _CONGESTION_MAX_MILES_NORTH,
        cbd=miles_north <= _CBD_MAX_MILES_NORTH,
        affluence=affluence,
        tip_generosity=np.exp(0.12 * affluence),
    )


@dataclass(frozen=True)
class _Demand:
    """Where rides of one taxi type start and end: a joint distribution over zone pairs, kept as a
    Walker alias table so that drawing millions of pairs costs two gathers, not a binary search."""

    keep: np.ndarray  # probability of keeping cell i rather than taking alias[i]
    alias: np.ndarray

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cell = rng.integers(0, self.keep.size, n)
        pair = np.where(rng.random(n) < self.keep[cell], cell, self.alias[cell])
        return np.divmod(pair, _ZONES)


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method; a Python loop over the cells, run once per taxi type (cached)."""
    k = weights.size
    scaled = (weights * (k / weights.sum())).tolist()
    keep, alias = [1.0] * k, list(range(k))
    small = [i for i, w in enumerate(scaled) if w < 1.0]
    large = [i for i, w in enumerate(scaled) if w >= 1.0]
    while small and large:
        s, big = small.pop(), large.pop()
        keep[s], alias[s] = scaled[s], big
        scaled[big] += scaled[s] - 1.0
        (small if scaled[big] < 1.0 else large).append(big)
    return np.asarray(keep), np.asarray(alias, dtype=np.int64)


def _with_shares(weights: np.ndarray, shares: dict[int, float]) -> np.ndarray:
    """Rescale ``weights`` so each zone in ``shares`` gets exactly that share of the total."""
    out = weights.copy()
    fixed = list(shares)
    out[fixed] = 0.0
    out *= (1.0 - sum(shares.values())) / out.sum()
    out[fixed] = list(shares.values())
    return out


@lru_cache(maxsize=3)
def _demand(taxi_type: TaxiType) -> _Demand:
    city = _city()
    rng = np.random.default_rng([_GEOGRAPHY_SEED, list(TaxiType).index(taxi_type)])
    b = city.borough
    manhattan = b == _MANHATTAN
    outer = ~manhattan & (b != _EWR) & (b != _UNKNOWN)
    if taxi_type is TaxiType.YELLOW:
        popularity = rng.lognormal(0.0, 0.4, _ZONES)
        origin = np.where(city.congestion_zone, 1.0, np.where(manhattan, 0.08, 0.004))
        origin[(b == _BROOKLYN) | (b == _QUEENS)] = 0.01
        hot, reach_miles = _YELLOW_HOT, 0.9
        origin_shares = {JFK_ZONE_ID: 0.055, LGA_ZONE_ID: 0.035, EWR_ZONE_ID: 0.0003,
                         264: 0.012, 265: 0.003}  # fmt: skip
        attraction = np.where(city.congestion_zone, 1.0, np.where(manhattan, 0.3, 0.06))
        airport_shares = {JFK_ZONE_ID: 0.022, LGA_ZONE_ID: 0.028, EWR_ZONE_ID: 0.003}
    else:
        # Green cabs may only pick up outside Manhattan's Yellow Zone and the airports (dispatched
        # rides aside); FHV bases are mostly in the outer boroughs.
        green = taxi_type is TaxiType.GREEN
        popularity = rng.lognormal(0.0, 0.5, _ZONES)
        origin = np.where(manhattan, 1.0, np.where(outer, 0.3, 0.0))
        origin[city.congestion_zone] = 0.01 if green else 0.2
        origin[b == _STATEN] = 0.03
        hot = _GREEN_HOT if green else {}
        reach_miles = 0.8 if green else 1.5
        origin_shares = {JFK_ZONE_ID: 0.001, LGA_ZONE_ID: 0.001, EWR_ZONE_ID: 0.0001,
                         264: 0.002 if green else 0.01, 265: 0.001 if green else 0.01}  # fmt: skip
        attraction = np.where(city.congestion_zone, 1.2, 1.0)
        airport_shares = {JFK_ZONE_ID: 0.006, LGA_ZONE_ID: 0.006, EWR_ZONE_ID: 0.0005}
    popularity[list(hot)] = 1.0  # the published rankings decide the hot spots, not chance
    origin = origin * popularity
    for zone, boost in hot.items():
        origin[zone] *= boost
    origin[0] = 0.0
    origin = _with_shares(origin, origin_shares)
    attraction = attraction * np.sqrt(popularity)
    attraction[[0, *AIRPORT_ZONE_IDS]] = 0.0  # airports get their own shares below
    attraction[[264, 265]] = (0.05, 0.02)
    attraction[[103, 104, 105]] *= 0.02  # the harbour islands: ferries, not cabs

    # Gravity model: most rides are short (a steep decay with distance), a share of each zone's
    # rides goes to the airports (falling slowly with the distance to them), and rides from an
    # airport go anywhere in the city.
    decay = (1.0 + city.road_miles / reach_miles) ** -2.5
    decay[np.arange(_ZONES), np.arange(_ZONES)] *= 0.5  # a ride within one zone is often a walk
    airports = list(airport_shares)
    decay[airports] = (1.0 + city.road_miles[airports] / 12.0) ** -1.0
    destination = attraction[None, :] * decay
    destination /= destination.sum(axis=1, keepdims=True)
    to_airport = (
        np.asarray(list(airport_shares.values()))[None, :]
        * ((1.0 + city.road_miles[:, airports] / 10.0) / 2.0) ** -1.5
    )
    to_airport[airports] = 0.003  # airport to airport: crew and connections
    destination *= 1.0 - to_airport.sum(axis=1, keepdims=True)
    destination[:, airports] = to_airport
    keep, alias = _alias_table((origin[:, None] * destination).ravel())
    return _Demand(keep=keep, alias=alias)


def default_rows(taxi_type: TaxiType | str) -> int:
    """Rows per synthetic month when the caller does not say: about a tenth of a real yellow month,
    about a real green month (the course's size), a slice of a real FHV month."""
    return _DEFAULT_ROWS[parse_taxi_type(taxi_type)]


def synthesize_month(
    taxi_type: TaxiType | str, month: Month | str, rows: int, seed: int = 0
) -> pa.Table:
    """A month of rides with exactly ``TLC_SCHEMAS[taxi_type]`` (names, order, dtypes, nulls).

    Deterministic: the same ``(taxi_type, month, rows, seed)`` gives an identical table. Rows are
    in pickup order apart from the dirty ones, as in TLC's files. For months before 2025 the
    ``cbd_congestion_fee`` column (absent from older real files) is 0.
    """
    kind, month = parse_taxi_type(taxi_type), parse_month(month)
    if rows < 0:
        raise DataError(f"rows must be >= 0, got {rows}")
    rng = np.random.default_rng([seed, list(TaxiType).index(kind), month.year, month.month])
    pickups = _pickup_times(kind, month, rows, rng)
    # Built in chunks: the temporaries of one chunk are reused by the next instead of faulting in
    # fresh pages for every 3-million-row array (the dominant cost on small machines).
    chunks = []
    for lo in range(0, rows, _CHUNK_ROWS):
        rides = _Rides.sample(kind, month, pickups[lo : lo + _CHUNK_ROWS], rng)
        dress = _fhv_columns if kind is TaxiType.FHV else _taxi_columns
        columns = dress(kind, month, rides, rng)
        chunks.append(pa.Table.from_pydict(columns, schema=TLC_SCHEMAS[kind]))
    if not chunks:
        return TLC_SCHEMAS[kind].empty_table()
    return pa.concat_tables(chunks)


def write_month(
    table: pa.Table, out_dir: Path, taxi_type: TaxiType | str, month: Month | str
) -> Path:
    """Write ``table`` to ``out_dir/<TLC file name>`` (creating the directory) and return the path.

    The file appears atomically: readers never see a half-written month.
    """
    out_dir = Path(out_dir)
    path = out_dir / month_file_name(taxi_type, month)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, partial, compression="zstd", row_group_size=_ROW_GROUP_ROWS)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


# --------------------------------------------------------------------------- rides

_CHUNK_ROWS = 1 << 18
# Row groups small enough for batch readers to stream a month in bounded memory.
_ROW_GROUP_ROWS = 1 << 18


def _pickup_times(kind: TaxiType, month: Month, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted pickup times (int64 µs): a (day, hour) cell by weekday volume and hourly profile,
    then a uniform second within the hour (TLC clocks record whole seconds)."""
    weekday = (month.start.weekday() + np.arange(month.days)) % 7
    weekday_profile, weekend_profile = (np.asarray(p) for p in _HOURLY[kind])
    hourly = np.where((weekday >= 5)[:, None], weekend_profile, weekday_profile)
    cells = (hourly * np.asarray(_WEEKDAY_VOLUME[kind])[weekday][:, None]).ravel()
    cell = np.searchsorted(np.cumsum(cells / cells.sum()), rng.random(n), side="right")
    cell = np.minimum(cell, cells.size - 1)
    second = rng.integers(0, 3600, n)
    return np.sort(_month_start_us(month) + cell * _US_PER_HOUR + second * 1_000_000)


def _month_start_us(month: Month) -> int:
    return int(np.datetime64(month.start, "us").astype(np.int64))


@dataclass
class _Rides:
    """The true rides of a chunk before they are dressed as one taxi type's records."""

    pickup_us: np.ndarray  # int64 microseconds since the epoch
    hour: np.ndarray
    weekend: np.ndarray  # bool
    pu: np.ndarray
    do: np.ndarray
    miles: np.ndarray  # driven distance
    minutes: np.ndarray  # true duration

    @classmethod
    def sample(
        cls, kind: TaxiType, month: Month, pickup_us: np.ndarray, rng: np.random.Generator
    ) -> _Rides:
        city = _city()
        n = pickup_us.size
        hours_in = (pickup_us - _month_start_us(month)) // _US_PER_HOUR
        day, hour = np.divmod(hours_in, 24)
        weekend = (month.start.weekday() + day) % 7 >= 5

        pu, do = _demand(kind).draw(rng, n)

        # How far: the pair's road distance, varied by the route taken.
        miles = city.road_miles[pu, do] * rng.lognormal(0.0, 0.12, n)
        unknown = (pu >= _FIRST_UNKNOWN) | (do >= _FIRST_UNKNOWN)
        miles[unknown] = rng.lognormal(np.log(3.0), 0.8, int(unknown.sum()))

        # How long: distance x pace of the pair x traffic at that hour, plus the stops.
        pace = city.pace[pu, do] * _PACE[weekend.astype(np.int64), hour]
        pace *= rng.lognormal(0.0, 0.24, n)
        minutes = 1.0 + miles * pace + rng.gamma(2.0, 0.6, n)
        # Some rides wait: a passenger stop, a closed street, an accident.
        delayed = rng.random(n) < 0.04
        minutes[delayed] += rng.exponential(8.0, int(delayed.sum()))
        return cls(pickup_us, hour, weekend, pu, do, miles, minutes)


_FIRST_UNKNOWN = min(UNKNOWN_ZONE_IDS)
_PACE = np.asarray(_PACE_BY_HOUR)


def _pick(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Indices of about ``rate * n`` rows; at least one when the chunk is big enough to matter,
    so every synthetic month shows every kind of dirt."""
    count = max(1, round(n * rate)) if n >= 1_000 else int(rng.binomial(n, rate))
    return np.sort(rng.choice(n, size=min(count, n), replace=False))


def _dirty_times(
    rides: _Rides, month: Month, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pickup and dropoff (int64 µs, whole seconds) with the clock errors of real files."""
    n = rides.pickup_us.size
    pickup = rides.pickup_us.copy()
    dropoff = pickup + np.round(rides.minutes * 60.0).astype(np.int64) * 1_000_000
    # Dropoff before pickup (clock set back, fields swapped).
    idx = _pick(rng, n, 0.0004)
    dropoff[idx] = pickup[idx] - rng.integers(1, 90, idx.size) * _US_PER_MINUTE
    # Zero-length rides (cancelled at once).
    idx = _pick(rng, n, 0.0008)
    dropoff[idx] = pickup[idx]
    # Meter left running: hours-long rides, some almost a full day.
    idx = _pick(rng, n, 0.0015)
    dropoff[idx] = pickup[idx] + rng.integers(2 * 60, 24 * 60, idx.size) * _US_PER_MINUTE
    # Pickups outside the month: a day or two off, or a device clock years behind.
    idx = _pick(rng, n, 0.00005)
    month_us = _month_start_us(month.next()) - _month_start_us(month)
    shift = rng.integers(1, 72 * 60, idx.size) * _US_PER_MINUTE
    shift = np.where(rng.random(idx.size) < 0.5, -shift, shift + month_us)
    years_back = rng.random(idx.size) < 0.3
    shift[years_back] = -rng.integers(1, 16, int(years_back.sum())) * 365 * _US_PER_DAY
    pickup[idx] += shift
    dropoff[idx] += shift
    return pickup, dropoff


def _dirty_miles(
    miles: np.ndarray, pickup: np.ndarray, dropoff: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Recorded distance: rounded to 0.01 mile, with GPS zeros and outliers.

    Absurd distances (thousands of miles) come from broken meters whose clocks are broken too
    (dropoff set hours off here); milder outliers (tens to hundreds of miles) look like rides.
    """
    recorded = np.round(miles, 2)
    recorded[_pick(rng, miles.size, 0.015)] = 0.0
    idx = _pick(rng, miles.size, 0.00005)
    recorded[idx] = np.round(10 ** rng.uniform(1.5, 2.5, idx.size), 2)
    idx = _pick(rng, miles.size, 0.00002)
    recorded[idx] = np.round(10 ** rng.uniform(3.0, 5.5, idx.size), 2)
    dropoff[idx] = pickup[idx] + rng.integers(61, 24 * 60, idx.size) * _US_PER_MINUTE
    return recorded


def _choice(
    rng: np.random.Generator, values: list[int], weights: list[float], n: int
) -> np.ndarray:
    """``n`` draws of ``values`` with the given relative weights (int64)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    index = np.searchsorted(cdf / cdf[-1], rng.random(n), side="right")
    return np.asarray(values, dtype=np.int64)[np.minimum(index, len(values) - 1)]


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us, type=pa.timestamp("us"))


def _masked(values: np.ndarray, null: np.ndarray | None, type_: pa.DataType) -> pa.Array:
    return pa.array(values, type=type_, mask=null)


def _strings(choices: list[str], index: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Text column built by ``take`` from a small dictionary: no Python string per row."""
    indices = pa.array(index, type=pa.int32(), mask=null)
    return pa.array(choices, type=pa.large_string()).take(indices)


def _affluence_logit(p: float, zones: np.ndarray) -> np.ndarray:
    """Probability ``p`` on average, higher in affluent pickup zones."""
    logit = np.log(p / (1.0 - p)) + 0.6 * _city().affluence[zones]
    return 1.0 / (1.0 + np.exp(-logit))


# --------------------------------------------------------------------------- yellow / green

# Rate card in force since December 2022.
_INITIAL = 3.00
_PER_UNIT = 0.70  # per 1/5 mile, or per minute below 12 mph
_JFK_FLAT = 70.00
_MTA_TAX = 0.50
_IMPROVEMENT = 1.00
_OVERNIGHT = 1.00  # 8 pm - 6 am
_PEAK = 2.50  # weekdays 4 pm - 8 pm
_JFK_PEAK = 5.00
_NEWARK = 20.00
_AIRPORT_FEE = 1.75  # yellow pickups at LaGuardia and JFK
_CBD_FEE = 0.75
_CBD_START = int(np.datetime64("2025-01-05T00:00:00", "us").astype(np.int64))
_TOLL = 6.94
_NEWARK_TOLL = 17.38
# Share of rides that pay a bridge or tunnel toll, by (borough, borough).
_TOLL_SHARE = {
    (_MANHATTAN, _QUEENS): 0.35,
    (_MANHATTAN, _BROOKLYN): 0.3,
    (_BROOKLYN, _STATEN): 0.9,
    (_MANHATTAN, _STATEN): 0.6,
    (_QUEENS, _BRONX): 0.6,
    (_MANHATTAN, _BRONX): 0.1,
    (_QUEENS, _STATEN): 0.9,
}
_TOLL_MATRIX = np.zeros((7, 7))
for (_a, _b), _share in _TOLL_SHARE.items():
    _TOLL_MATRIX[_a, _b] = _TOLL_MATRIX[_b, _a] = _share

# Card share on average (higher in affluent zones); the other payments split by fixed shares.
# Yellow rows with payment_type 0 ("flex fare"/unknown) have passenger_count, RatecodeID,
# store_and_fwd_flag, congestion_surcharge and Airport_fee null, as in the 2024/2025 files;
# green files null that set (with payment_type and trip_type) on a few % of rows instead.
_CARD_SHARE = {TaxiType.YELLOW: 0.82, TaxiType.GREEN: 0.77}
_OTHER_PAYMENTS = {TaxiType.YELLOW: ([2, 4, 3], [0.86, 0.09, 0.05]),
                   TaxiType.GREEN: ([2, 3, 4, 5], [0.94, 0.035, 0.02, 0.005])}  # fmt: skip
_YELLOW_FLEX_SHARE = 0.07
_GREEN_NULL_SHARE = 0.045
# Card tips: none, the screen's 20/25/30 %, or a custom amount.
_TIP_CHOICES = np.asarray([0.0, 0.20, 0.25, 0.30, -1.0])
_TIP_WEIGHTS = {TaxiType.YELLOW: [0.08, 0.40, 0.17, 0.07, 0.28],
                TaxiType.GREEN: [0.08, 0.44, 0.14, 0.05, 0.29]}  # fmt: skip


def _taxi_columns(
    kind: TaxiType, month: Month, rides: _Rides, rng: np.random.Generator
) -> dict[str, pa.Array]:
    city = _city()
    n = rides.pu.size
    yellow = kind is TaxiType.YELLOW
    pu, do, miles = rides.pu, rides.do, rides.miles
    pickup, dropoff = _dirty_times(rides, month, rng)
    pu_manhattan, do_manhattan = city.borough[pu] == _MANHATTAN, city.borough[do] == _MANHATTAN

    # Rate code: JFK <-> Manhattan is the flat fare, Newark its own code, a few negotiated.
    ratecode = np.ones(n, dtype=np.int64)
    jfk_manhattan = ((pu == JFK_ZONE_ID) & do_manhattan) | ((do == JFK_ZONE_ID) & pu_manhattan)
    ratecode[jfk_manhattan & (rng.random(n) < 0.92)] = 2
    newark = (pu == EWR_ZONE_ID) | (do == EWR_ZONE_ID)
    ratecode[newark] = 3
    ratecode[(miles > 12) & (ratecode == 1) & (rng.random(n) < 0.03)] = 4
    trip_type = np.ones(n, dtype=np.int64)
    if yellow:
        ratecode[rng.random(n) < 0.004] = 5
        ratecode[rng.random(n) < 0.002] = 99
    else:
        dispatched = rng.random(n) < 0.03
        trip_type[dispatched] = 2
        ratecode[dispatched] = 5
    ratecode[rng.random(n) < 0.0002] = 6

    # The meter: 1/5-mile units, plus minutes in slow traffic (the part of the ride below 12 mph).
    slow_minutes = np.maximum(0.0, rides.minutes - miles * 5.0) * 0.6
    fare = _INITIAL + _PER_UNIT * np.round(miles * 5.0 + slow_minutes)
    fare[ratecode == 2] = _JFK_FLAT
    outside_city = ratecode == 4
    fare[outside_city] = np.round(fare[outside_city] * 1.6, 1)
    negotiated = ratecode == 5
    fare[negotiated] = np.round(fare[negotiated] * rng.uniform(0.8, 1.3, int(negotiated.sum())))
    fare = np.round(fare, 2)

    weekday_peak = ~rides.weekend & (rides.hour >= 16) & (rides.hour < 20)
    overnight = (rides.hour >= 20) | (rides.hour < 6)
    extra = np.where(overnight, _OVERNIGHT, 0.0) + np.where(weekday_peak, _PEAK, 0.0)
    extra[ratecode == 2] = np.where(weekday_peak, _JFK_PEAK, 0.0)[ratecode == 2]
    extra[newark] += _NEWARK
    extra[negotiated] = 0.0
    mta_tax = np.where(negotiated, 0.0, _MTA_TAX)
    improvement = np.full(n, _IMPROVEMENT)

    toll_share = _TOLL_MATRIX[city.borough[pu].clip(0, 6), city.borough[do].clip(0, 6)]
    tolls = np.where(rng.random(n) < toll_share, _TOLL, 0.0)
    tolls[newark] = _NEWARK_TOLL

    touches = city.congestion_zone[pu] | city.congestion_zone[do]
    congestion = np.where(touches, 2.50 if yellow else 2.75, 0.0)
    airport_fee = np.zeros(n)
    if yellow:
        airport_fee[(pu == JFK_ZONE_ID) | (pu == LGA_ZONE_ID)] = _AIRPORT_FEE
    cbd_fee = np.where((city.cbd[pu] | city.cbd[do]) & (pickup >= _CBD_START), _CBD_FEE, 0.0)

    card = rng.random(n) < _affluence_logit(_CARD_SHARE[kind], pu)
    others, other_weights = _OTHER_PAYMENTS[kind]
    payment = np.where(card, 1, _choice(rng, others, other_weights, n))
    if yellow:
        payment[rng.random(n) < _YELLOW_FLEX_SHARE] = 0

    # Tips: a share of everything but tolls, by the rider's choice and the neighbourhood's habits.
    # Cash tips never reach the record; flex-fare rides record most app tips.
    before_tip = fare + extra + mta_tax + improvement + congestion + airport_fee + cbd_fee
    pct = _TIP_CHOICES[_choice(rng, [0, 1, 2, 3, 4], _TIP_WEIGHTS[kind], n)]
    custom = pct < 0
    pct[custom] = rng.uniform(0.10, 0.30, int(custom.sum()))
    pct *= city.tip_generosity[pu]
    tip = np.round(before_tip * pct, 2)
    round_up = custom & (rng.random(n) < 0.5)
    tip[round_up] = np.round(tip[round_up])
    tip[~((payment == 1) | ((payment == 0) & (rng.random(n) < 0.6)))] = 0.0

    # Rows whose surcharges are null in the file carry none in their total either.
    null = (payment == 0) if yellow else (rng.random(n) < _GREEN_NULL_SHARE)
    congestion[null] = 0.0
    airport_fee[null] = 0.0

    # Refunds and disputes show up as rows with every amount negated.
    refund = ((payment == 3) | (payment == 4)) & (rng.random(n) < 0.5)
    amounts = [fare, extra, mta_tax, tip, tolls, improvement, congestion, airport_fee, cbd_fee]
    for amount in amounts:
        amount[refund] *= -1.0
        amount += 0.0  # turns the -0.0 of negated zeros back into 0.0
    total = np.round(np.sum(amounts, axis=0), 2)

    passengers = _choice(
        rng,
        [1, 2, 3, 4, 5, 6, 0],
        [0.75, 0.14, 0.035, 0.02, 0.02, 0.012, 0.015]
        if yellow
        else [0.85, 0.08, 0.02, 0.01, 0.015, 0.01, 0.01],
        n,
    )
    if yellow:
        vendor = _choice(rng, [2, 1, 6, 7], [0.72, 0.27, 0.005, 0.005], n)
    else:
        vendor = _choice(rng, [2, 1, 6], [0.85, 0.14, 0.01], n)
    stored = (rng.random(n) < 0.005).astype(np.int64)  # index into ["N", "Y"]
    recorded_miles = _dirty_miles(miles, pickup, dropoff, rng)

    if yellow:
        return {
            "VendorID": pa.array(vendor, type=pa.int32()),
            "tpep_pickup_datetime": _ts(pickup),
            "tpep_dropoff_datetime": _ts(dropoff),
            "passenger_count": _masked(passengers, null, pa.int64()),
            "trip_distance": pa.array(recorded_miles),
            "RatecodeID": _masked(ratecode, null, pa.int64()),
            "store_and_fwd_flag": _strings(["N", "Y"], stored, null),
            "PULocationID": pa.array(pu, type=pa.int32()),
            "DOLocationID": pa.array(do, type=pa.int32()),
            "payment_type": pa.array(payment),
            "fare_amount": pa.array(fare),
            "extra": pa.array(extra),
            "mta_tax": pa.array(mta_tax),
            "tip_amount": pa.array(tip),
            "tolls_amount": pa.array(tolls),
            "improvement_surcharge": pa.array(improvement),
            "total_amount": pa.array(total),
            "congestion_surcharge": _masked(congestion, null, pa.float64()),
            "Airport_fee": _masked(airport_fee, null, pa.float64()),
            "cbd_congestion_fee": pa.array(cbd_fee),
        }
    return {
        "VendorID": pa.array(vendor, type=pa.int32()),
        "lpep_pickup_datetime": _ts(pickup),
        "lpep_dropoff_datetime": _ts(dropoff),
        "store_and_fwd_flag": _strings(["N", "Y"], stored, null),
        "RatecodeID": _masked(ratecode, null, pa.int64()),
        "PULocationID": pa.array(pu, type=pa.int32()),
        "DOLocationID": pa.array(do, type=pa.int32()),
        "passenger_count": _masked(passengers, null, pa.int64()),
        "trip_distance": pa.array(recorded_miles),
        "fare_amount": pa.array(fare),
        "extra": pa.array(extra),
        "mta_tax": pa.array(mta_tax),
        "tip_amount": pa.array(tip),
        "tolls_amount": pa.array(tolls),
        "ehail_fee": pa.nulls(n, type=pa.float64()),
        "improvement_surcharge": pa.array(improvement),
        "total_amount": pa.array(total),
        "payment_type": _masked(payment, null, pa.int64()),
        "trip_type": _masked(trip_type, null, pa.int64()),
        "congestion_surcharge": _masked(congestion, null, pa.float64()),
        "cbd_congestion_fee": pa.array(cbd_fee),
    }


# --------------------------------------------------------------------------- fhv

# Dispatching bases: a fixed roster with a few big ones.
_FHV_ROSTER = [
    f"B{code:05d}"
    for code in np.sort(np.random.default_rng(_GEOGRAPHY_SEED + 7).choice(3500, 60, replace=False))
]
_FHV_BASE_WEIGHTS = list(1.0 / np.arange(1, len(_FHV_ROSTER) + 1) ** 1.1)


def _fhv_columns(
    kind: TaxiType, month: Month, rides: _Rides, rng: np.random.Generator
) -> dict[str, pa.Array]:
    n = rides.pu.size
    pickup, dropoff = _dirty_times(rides, month, rng)
    base = _choice(rng, list(range(len(_FHV_ROSTER))), _FHV_BASE_WEIGHTS, n)
    # Most rides are affiliated with the base that dispatched them.
    affiliated = np.where(rng.random(n) < 0.1, rng.integers(0, len(_FHV_ROSTER), n), base)
    # Zones are often missing in FHV records, the pickup more often than the dropoff.
    shared = rng.random(n) < 0.003
    return {
        "dispatching_base_num": _strings(_FHV_ROSTER, base),
        "pickup_datetime": _ts(pickup),
        "dropOff_datetime": _ts(dropoff),
        "PUlocationID": _masked(rides.pu, rng.random(n) < 0.25, pa.int64()),
        "DOlocationID": _masked(rides.do, rng.random(n) < 0.12, pa.int64()),
        "SR_Flag": _masked(np.ones(n, dtype=np.int64), ~shared, pa.int64()),
        "Affiliated_base_number": _strings(_FHV_ROSTER, affiliated, rng.random(n) < 0.05),
    }

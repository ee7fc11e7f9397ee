"""The data layer: TLC schemas, zones, synthetic months, readers — on real files in tmp_path."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from ridecast.data.readers import filter_training, find_month_file, iter_trip_batches, read_trips
from ridecast.data.schema import (
    CANONICAL_COLUMNS,
    TLC_SCHEMAS,
    Month,
    TaxiType,
    month_file_name,
    month_range,
    parse_month,
    parse_taxi_type,
)
from ridecast.data.synth import default_rows, synthesize_month, write_month
from ridecast.data.zones import MAX_ZONE_ID, VALID_ZONE_IDS, load_zones
from ridecast.errors import DataError

JAN, FEB = Month(2025, 1), Month(2025, 2)
OUTPUT_COLUMNS = [*CANONICAL_COLUMNS, "source_row"]


@pytest.fixture(scope="module")
def green_jan() -> pa.Table:
    return synthesize_month(TaxiType.GREEN, JAN, 40_000, seed=1)


@pytest.fixture(scope="module")
def yellow_jan() -> pa.Table:
    return synthesize_month(TaxiType.YELLOW, JAN, 60_000, seed=1)


def _duration_minutes(table: pa.Table, kind: TaxiType) -> np.ndarray:
    pickup, dropoff = {
        TaxiType.GREEN: ("lpep_pickup_datetime", "lpep_dropoff_datetime"),
        TaxiType.YELLOW: ("tpep_pickup_datetime", "tpep_dropoff_datetime"),
        TaxiType.FHV: ("pickup_datetime", "dropOff_datetime"),
    }[kind]
    elapsed = table[dropoff].to_numpy() - table[pickup].to_numpy()
    return elapsed / np.timedelta64(1, "m")


# --------------------------------------------------------------------------- schema


def test_parse_taxi_type_accepts_any_case_and_lists_valid_types_on_error() -> None:
    assert parse_taxi_type(" Yellow ") is TaxiType.YELLOW
    assert parse_taxi_type(TaxiType.FHV) is TaxiType.FHV
    assert str(TaxiType.GREEN) == "green"
    with pytest.raises(DataError, match=r"'blue'.*green, yellow, fhv"):
        parse_taxi_type("blue")


@pytest.mark.parametrize("bad", ["2025-13", "2025-00", "jan", "2025-1", "25-01", ""])
def test_parse_month_rejects_bad_months_naming_the_value(bad: str) -> None:
    with pytest.raises(DataError, match=r"YYYY-MM with month 01\.\.12") as info:
        parse_month(bad)
    assert repr(bad) in str(info.value)
    assert "\n" not in str(info.value)


def test_month_arithmetic_and_file_names() -> None:
    dec = parse_month("2024-12")
    assert str(dec) == "2024-12"
    assert dec.next() == JAN and JAN.prev() == dec and dec < JAN
    assert JAN.start == datetime(2025, 1, 1) and JAN.end == datetime(2025, 2, 1)
    assert month_range(Month(2024, 11), FEB) == [Month(2024, 11), dec, JAN, FEB]
    with pytest.raises(DataError, match="backwards"):
        month_range(FEB, JAN)
    assert month_file_name("green", JAN) == "green_tripdata_2025-01.parquet"
    assert month_file_name(TaxiType.FHV, "2024-03") == "fhv_tripdata_2024-03.parquet"


def test_tlc_schemas_match_the_published_2025_files() -> None:
    yellow = TLC_SCHEMAS[TaxiType.YELLOW]
    assert yellow.names[:3] == ["VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime"]
    assert yellow.names[-3:] == ["congestion_surcharge", "Airport_fee", "cbd_congestion_fee"]
    assert yellow.field("VendorID").type == pa.int32()
    assert yellow.field("PULocationID").type == pa.int32()
    assert yellow.field("passenger_count").type == pa.int64()
    assert yellow.field("store_and_fwd_flag").type == pa.large_string()
    assert yellow.field("tpep_pickup_datetime").type == pa.timestamp("us")
    green = TLC_SCHEMAS[TaxiType.GREEN]
    assert "ehail_fee" in green.names and green.names.index("trip_type") == 18
    fhv = TLC_SCHEMAS[TaxiType.FHV]
    assert fhv.names == [
        "dispatching_base_num",
        "pickup_datetime",
        "dropOff_datetime",
        "PUlocationID",
        "DOlocationID",
        "SR_Flag",
        "Affiliated_base_number",
    ]
    assert all(field.nullable for schema in TLC_SCHEMAS.values() for field in schema)


# --------------------------------------------------------------------------- zones


def test_zone_lookup_has_the_265_tlc_zones() -> None:
    zones = load_zones()
    assert list(zones.columns) == ["LocationID", "Borough", "Zone", "service_zone"]
    assert len(zones) == 265 and MAX_ZONE_ID == 265
    assert frozenset(range(1, 266)) == VALID_ZONE_IDS
    by_id = zones.set_index("LocationID")
    assert by_id.loc[132, "Zone"] == "JFK Airport" and by_id.loc[1, "Borough"] == "EWR"
    assert by_id.loc[265, "Zone"] == "NA"  # literally "NA", not a missing value
    zones.loc[0, "Zone"] = "changed"
    assert load_zones().loc[0, "Zone"] == "Newark Airport"


# --------------------------------------------------------------------------- synth


@pytest.mark.parametrize("kind", list(TaxiType))
def test_synthetic_month_has_the_exact_tlc_schema_on_disk(kind: TaxiType, tmp_path: Path) -> None:
    table = synthesize_month(kind, FEB, 3_000, seed=3)
    assert table.schema.equals(TLC_SCHEMAS[kind])
    path = write_month(table, tmp_path / "new" / "dir", kind, FEB)
    assert path == tmp_path / "new" / "dir" / month_file_name(kind, FEB)
    assert pq.read_schema(path).remove_metadata().equals(TLC_SCHEMAS[kind])
    assert pq.read_table(path).equals(table)
    assert default_rows(kind) > 0


def test_synthetic_month_is_deterministic_for_a_seed() -> None:
    a = synthesize_month("green", JAN, 5_000, seed=7)
    assert a.equals(synthesize_month("green", JAN, 5_000, seed=7))
    assert not a.equals(synthesize_month("green", JAN, 5_000, seed=8))
    assert not a.equals(synthesize_month("green", FEB, 5_000, seed=7))
    assert synthesize_month("yellow", JAN, 0).num_rows == 0


def test_synthetic_month_has_the_dirt_of_real_files(green_jan: pa.Table) -> None:
    df = green_jan.to_pandas()
    minutes = _duration_minutes(green_jan, TaxiType.GREEN)
    pickup = df["lpep_pickup_datetime"]
    assert (minutes < 0).any(), "dropoff before pickup"
    assert (minutes > 120).any(), "hours-long rides"
    assert ((pickup < pd.Timestamp(JAN.start)) | (pickup >= pd.Timestamp(JAN.end))).any()
    assert (df["trip_distance"] == 0).mean() > 0.005
    assert (df["trip_distance"] > 100).any()
    assert (df["fare_amount"] < 0).any(), "refund rows"
    for column in ("passenger_count", "RatecodeID", "payment_type", "congestion_surcharge"):
        assert 0.01 < df[column].isna().mean() < 0.1, column
    assert df["ehail_fee"].isna().all()
    # ... yet most rides are plausible.
    assert np.mean((minutes >= 1) & (minutes <= 60)) > 0.95
    assert 8 < np.median(minutes) < 25


def test_synthetic_money_follows_the_rate_card(yellow_jan: pa.Table) -> None:
    df = yellow_jan.to_pandas()
    parts = [
        "fare_amount",
        "extra",
        "mta_tax",
        "tip_amount",
        "tolls_amount",
        "improvement_surcharge",
        "congestion_surcharge",
        "Airport_fee",
        "cbd_congestion_fee",
    ]
    np.testing.assert_allclose(df[parts].fillna(0).sum(axis=1), df["total_amount"], atol=0.011)
    standard = df[(df["RatecodeID"] == 1) & (df["fare_amount"] > 0)]
    assert standard["fare_amount"].min() >= 3.0
    assert (df.loc[df["RatecodeID"] == 2, "fare_amount"].abs() == 70.0).all()
    airport_pickup = df["PULocationID"].isin([132, 138])
    assert set(df.loc[airport_pickup & (df["fare_amount"] > 0), "Airport_fee"].dropna()) == {1.75}
    assert set(df.loc[~airport_pickup, "Airport_fee"].dropna().abs()) == {0.0}
    assert set(df["congestion_surcharge"].dropna().abs()) == {0.0, 2.5}
    card = df.loc[df["payment_type"] == 1, "tip_amount"]
    cash = df.loc[df["payment_type"] == 2, "tip_amount"]
    assert 0.6 < (df["payment_type"] == 1).mean() < 0.9
    assert (cash == 0).all() and card.mean() > 2.0 and (card > 0).mean() > 0.8


def test_synthetic_geography_and_traffic_are_consistent(yellow_jan: pa.Table) -> None:
    df = yellow_jan.to_pandas()
    zones = load_zones().set_index("LocationID")
    df["minutes"] = _duration_minutes(yellow_jan, TaxiType.YELLOW)
    pickup_borough = zones.loc[df["PULocationID"], "Borough"].to_numpy()
    assert (pickup_borough == "Manhattan").mean() > 0.7
    assert 0.03 < (df["PULocationID"] == 132).mean() < 0.08
    clean = df[df["minutes"].between(1, 180) & df["trip_distance"].between(0.5, 60)]
    from_jfk = clean[clean["PULocationID"] == 132]
    assert from_jfk["trip_distance"].median() > 10 > clean["trip_distance"].median()
    # One zone pair, one distance: the spread within a pair is small next to the spread overall.
    pair_spread = clean.groupby(["PULocationID", "DOLocationID"])["trip_distance"].std().median()
    assert pair_spread < 0.3 * clean["trip_distance"].std()
    # Weekday rush hour is slower than the night.
    pace = clean["minutes"] / clean["trip_distance"]
    hour = clean["tpep_pickup_datetime"].dt.hour
    weekday = clean["tpep_pickup_datetime"].dt.day_of_week < 5
    assert pace[weekday & hour.between(16, 18)].median() > 1.3 * pace[hour.between(2, 4)].median()
    # Fewer rides at night than in the evening peak.
    assert (hour == 4).sum() * 4 < (hour == 18).sum()


def test_green_pickups_avoid_manhattans_yellow_zone(green_jan: pa.Table) -> None:
    zones = load_zones().set_index("LocationID")
    service = zones.loc[green_jan["PULocationID"].to_numpy(), "service_zone"].to_numpy()
    assert (service == "Yellow Zone").mean() < 0.05
    top = pd.Series(green_jan["PULocationID"].to_numpy()).value_counts().index[:3]
    assert set(top) <= {74, 75, 41, 42, 166}


def _course_features(df: pd.DataFrame) -> list[dict[str, object]]:
    return [
        {"PU_DO": f"{pu}_{do}", "trip_distance": d}
        for pu, do, d in zip(
            df["PULocationID"], df["DOLocationID"], df["trip_distance"], strict=True
        )
    ]


def test_course_models_learn_from_one_green_month_and_validate_on_the_next(
    tmp_path: Path, green_jan: pa.Table
) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from threadpoolctl import threadpool_limits

    write_month(green_jan, tmp_path, "green", JAN)
    write_month(synthesize_month("green", FEB, 40_000, seed=1), tmp_path, "green", FEB)
    train = filter_training(read_trips(tmp_path, "green", JAN))
    valid = filter_training(read_trips(tmp_path, "green", FEB))
    vectorizer = DictVectorizer()
    x_train = vectorizer.fit_transform(_course_features(train))
    x_valid = vectorizer.transform(_course_features(valid))

    def rmse_over_std(target: str, prediction: np.ndarray) -> float:
        y = valid[target].to_numpy(dtype=float)
        return float(np.sqrt(np.mean((prediction - y) ** 2)) / y.std())

    def dense(df: pd.DataFrame) -> np.ndarray:
        columns = ("PULocationID", "DOLocationID", "trip_distance")
        return np.column_stack([df[c].to_numpy(dtype=float) for c in columns])

    ratios = {}
    # One thread: OpenMP workers spin badly when other test processes share the two cores.
    with threadpool_limits(1):
        for target in ("duration", "tip_amount", "total_amount"):
            model = LinearRegression().fit(x_train, train[target].to_numpy(dtype=float))
            ratios[target] = rmse_over_std(target, model.predict(x_valid))
        boosted = HistGradientBoostingRegressor(max_iter=100, random_state=0)
        boosted.fit(dense(train), train["duration"].to_numpy(dtype=float))
        boosted_ratio = rmse_over_std("duration", boosted.predict(dense(valid)))
    # Real TLC months give 0.55-0.8 for duration; tips and cost must be learnable (R^2 > 0.1).
    assert 0.4 < ratios["duration"] < 0.75, ratios
    assert 1 - ratios["tip_amount"] ** 2 > 0.1, ratios
    assert 1 - ratios["total_amount"] ** 2 > 0.3, ratios
    # Nonlinear effects (distance vs pace, zone interactions) reward a stronger model.
    assert boosted_ratio < ratios["duration"] - 0.05, (boosted_ratio, ratios)


def test_fhv_month_has_times_and_often_missing_zones() -> None:
    table = synthesize_month("fhv", JAN, 4_000, seed=2)
    assert 0.1 < table["PUlocationID"].null_count / table.num_rows < 0.5
    assert table["dispatching_base_num"].null_count == 0
    assert np.median(_duration_minutes(table, TaxiType.FHV)) > 5


# --------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tlc")
    for kind in TaxiType:
        for month in (JAN, FEB):
            write_month(synthesize_month(kind, month, 3_000, seed=5), root, kind, month)
    return root


def test_read_trips_returns_the_canonical_frame(data_dir: Path) -> None:
    path = data_dir / "green_tripdata_2025-01.parquet"
    df = read_trips(path)
    raw = pq.read_table(path).to_pandas()
    assert list(df.columns) == OUTPUT_COLUMNS and len(df) == len(raw)
    assert str(df["pickup_datetime"].dtype) == "datetime64[us]"
    assert str(df["PULocationID"].dtype) == "Int64" and str(df["payment_type"].dtype) == "Int64"
    assert df["source_row"].dtype == np.int64 and df["source_row"].tolist() == list(range(len(df)))
    assert (df["PULocationID"].to_numpy() == raw["PULocationID"].to_numpy()).all()
    expected = (raw["lpep_dropoff_datetime"] - raw["lpep_pickup_datetime"]).dt.total_seconds() / 60
    np.testing.assert_allclose(df["duration"], expected)
    # Dirty rows are kept; the nulls stay nulls.
    assert (df["duration"] < 0).any() and df["payment_type"].isna().any()


def test_read_trips_from_directory_glob_and_month(data_dir: Path) -> None:
    both = read_trips(data_dir, "green")
    assert len(both) == 6_000 and both["source_row"].is_unique
    assert both["source_row"].is_monotonic_increasing
    feb = read_trips(data_dir, "green", FEB)
    assert feb.equals(read_trips(data_dir / "green_tripdata_2025-02.parquet"))
    globbed = read_trips(str(data_dir / "yellow_tripdata_*.parquet"))
    assert len(globbed) == 6_000
    fhv = read_trips(data_dir, "fhv", "2025-01")
    assert fhv["trip_distance"].isna().all() and fhv["fare_amount"].isna().all()
    assert fhv["PULocationID"].isna().any() and fhv["PULocationID"].notna().any()


def test_iter_trip_batches_concatenates_to_read_trips(data_dir: Path) -> None:
    batches = list(iter_trip_batches(data_dir, "yellow", batch_size=700))
    assert max(len(b) for b in batches) <= 700 and len(batches) >= 9
    assert pd.concat(batches, ignore_index=True).equals(read_trips(data_dir, "yellow"))


def test_read_trips_from_a_sqlite_table(data_dir: Path, tmp_path: Path) -> None:
    from_parquet = read_trips(data_dir, "green", JAN)
    raw = pq.read_table(data_dir / "green_tripdata_2025-01.parquet").to_pandas()
    url = f"sqlite:///{tmp_path / 'trips.db'}"
    engine = sa.create_engine(url)
    raw.to_sql("trips", engine, index=True)  # pandas' "index" column keeps the file order
    engine.dispose()

    from_sql = read_trips(url, "green")
    pd.testing.assert_frame_equal(from_sql, from_parquet)
    batches = list(iter_trip_batches(url, "green", table="trips", batch_size=1_000))
    assert [len(b) for b in batches] == [1_000, 1_000, 1_000]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), from_sql)
    # In SQL a month selects the rides picked up in it.
    in_month = read_trips(url, "green", JAN)
    inside = from_parquet["pickup_datetime"].between(JAN.start, JAN.end, inclusive="left")
    assert len(in_month) == int(inside.sum()) < len(from_parquet)


def test_read_trips_from_a_postgres_table(
    data_dir: Path, postgres_url: str, unique_name: str
) -> None:
    from_parquet = read_trips(data_dir, "yellow", FEB)
    raw = pq.read_table(data_dir / "yellow_tripdata_2025-02.parquet").to_pandas()
    engine = sa.create_engine(postgres_url)
    raw.to_sql(unique_name, engine, index=True)  # mixed-case names: "PULocationID" stays quoted
    try:
        pd.testing.assert_frame_equal(
            read_trips(postgres_url, "yellow", table=unique_name), from_parquet
        )
        batches = list(
            iter_trip_batches(postgres_url, "yellow", FEB, table=unique_name, batch_size=900)
        )
        in_month = pd.concat(batches, ignore_index=True)
        inside = from_parquet["pickup_datetime"].between(FEB.start, FEB.end, inclusive="left")
        assert len(in_month) == int(inside.sum()) and max(len(b) for b in batches) <= 900
        assert in_month["source_row"].tolist() == list(range(len(in_month)))
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
        engine.dispose()


def test_a_file_with_the_published_schema_and_nulls_reads_unchanged(tmp_path: Path) -> None:
    schema = TLC_SCHEMAS[TaxiType.YELLOW]
    t0 = datetime(2025, 1, 3, 8, 0, 0)
    rows = {name: [None, None] for name in schema.names}
    rows |= {
        "VendorID": [2, 1],
        "tpep_pickup_datetime": [t0, t0],
        "tpep_dropoff_datetime": [datetime(2025, 1, 3, 8, 12, 30), None],
        "trip_distance": [1.9, 0.0],
        "PULocationID": [161, 264],
        "DOLocationID": [237, 264],
        "payment_type": [1, 0],
        "fare_amount": [14.2, 7.0],
        "tip_amount": [3.0, 0.0],
        "total_amount": [24.45, 11.0],
    }
    path = tmp_path / "yellow_tripdata_2025-01.parquet"
    pq.write_table(pa.Table.from_pydict(rows, schema=schema), path)
    df = read_trips(path, "yellow")
    assert df["duration"].iloc[0] == 12.5 and np.isnan(df["duration"].iloc[1])
    assert df["PULocationID"].tolist() == [161, 264] and df["payment_type"].tolist() == [1, 0]
    assert df["total_amount"].tolist() == [24.45, 11.0]


def test_older_column_spellings_and_dtypes_are_normalised(tmp_path: Path) -> None:
    # 2022 yellow: lower-case airport_fee, int64/double ids and codes, nanosecond timestamps.
    t0 = pd.Timestamp("2022-01-01 00:35:40")
    yellow_2022 = pa.table(
        {
            "VendorID": pa.array([1, 2], pa.int64()),
            "TPEP_Pickup_Datetime": pa.array([t0, t0], pa.timestamp("ns")),
            "tpep_dropoff_datetime": pa.array(
                [t0 + pd.Timedelta(minutes=18)] * 2, pa.timestamp("ns")
            ),
            "trip_distance": [2.1, 3.3],
            "pulocationid": pa.array([142, 236], pa.int64()),
            "DOLocationId": pa.array([236, 42], pa.int64()),
            "payment_type": pa.array([1.0, None], pa.float64()),
            "fare_amount": [14.5, 17.0],
            "tip_amount": [3.65, 0.0],
            "total_amount": [21.95, 21.3],
            "airport_fee": pa.array([0.0, None], pa.float64()),
        }
    )
    pq.write_table(yellow_2022, tmp_path / "yellow_tripdata_2022-01.parquet")
    yellow = read_trips(tmp_path / "yellow_tripdata_2022-01.parquet", "yellow")
    assert yellow["duration"].tolist() == [18.0, 18.0]
    assert yellow["DOLocationID"].tolist() == [236, 42]
    assert yellow["payment_type"].isna().tolist() == [False, True]
    # 2021 fhv: PUlocationID/DOlocationID as double with nulls, dropOff_datetime, all-null SR_Flag.
    fhv_2021 = pa.table(
        {
            "dispatching_base_num": ["B00009", "B00013"],
            "pickup_datetime": pa.array([t0, t0], pa.timestamp("us")),
            "dropOff_datetime": pa.array([t0 + pd.Timedelta(minutes=7)] * 2, pa.timestamp("us")),
            "PUlocationID": pa.array([None, 130.0], pa.float64()),
            "DOlocationID": pa.array([205.0, None], pa.float64()),
            "SR_Flag": pa.nulls(2),
            "Affiliated_base_number": ["B00009", None],
        }
    )
    pq.write_table(fhv_2021, tmp_path / "fhv_tripdata_2021-01.parquet")
    fhv = read_trips(tmp_path, "fhv", "2021-01")
    assert fhv["PULocationID"].isna().tolist() == [True, False]
    assert fhv["PULocationID"].iloc[1] == 130 and str(fhv["PULocationID"].iloc[1]) == "130"
    assert fhv["DOLocationID"].iloc[0] == 205 and fhv["duration"].tolist() == [7.0, 7.0]


def test_filter_training_is_the_course_cleaning() -> None:
    t0 = pd.Timestamp("2025-01-01 10:00")
    df = pd.DataFrame(
        {
            "pickup_datetime": [t0] * 6,
            "duration": [0.5, 1.0, 30.0, 60.0, 61.0, 20.0],
            "PULocationID": pd.array([1, 2, 3, None, 5, 6], dtype="Int64"),
            "DOLocationID": pd.array([1, 2, 3, 4, 5, 6], dtype="Int64"),
            "trip_distance": [1.0, 1.0, 5.0, 9.0, 9.0, np.nan],
        }
    )
    assert filter_training(df)["duration"].tolist() == [1.0, 30.0]
    # FHV has no distances at all: zone ids and duration decide.
    assert len(filter_training(df.assign(trip_distance=np.nan))) == 3


# --------------------------------------------------------------------------- errors


def test_missing_month_file_names_the_path_and_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        find_month_file(tmp_path, "green", "2024-05")
    message = str(info.value)
    assert str(tmp_path / "green_tripdata_2024-05.parquet") in message
    assert "ridecast data synth --taxi-type green --month 2024-05" in message
    with pytest.raises(DataError, match="no such file or directory"):
        read_trips(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match="no such file or directory"):
        iter_trip_batches(tmp_path / "nope.parquet")  # at the call, before any iteration
    with pytest.raises(DataError, match="no files match"):
        read_trips(str(tmp_path / "*.parquet"))


def test_missing_columns_name_the_file_and_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "partial.parquet"
    pq.write_table(pa.table({"lpep_pickup_datetime": [datetime(2025, 1, 1)], "x": [1]}), path)
    with pytest.raises(DataError) as info:
        read_trips(path)
    message = str(info.value)
    assert str(path) in message
    assert "lpep_dropoff_datetime, PULocationID, DOLocationID, trip_distance" in message
    assert "expected green trip columns" in message and "\n" not in message


def test_wrong_taxi_type_bad_values_and_bad_sql_sources_are_data_errors(
    data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=r"holds green trips .* expected yellow"):
        read_trips(data_dir / "green_tripdata_2025-01.parquet", "yellow")
    with pytest.raises(DataError, match="several trip files for 2025-01"):
        read_trips(data_dir, month=JAN)
    odd = tmp_path / "odd.parquet"
    t0 = datetime(2025, 1, 1)
    columns = {"pickup_datetime": [t0], "dropoff_datetime": [t0], "PULocationID": ["JFK"]}
    pq.write_table(pa.table({**columns, "DOLocationID": [1]}), odd)
    with pytest.raises(DataError, match=f"{odd}.*expected TLC dtypes"):
        read_trips(odd)
    with pytest.raises(DataError, match="no SQLite database file"):
        read_trips(f"sqlite:///{tmp_path / 'missing.db'}")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    pd.DataFrame({"a": [1]}).to_sql("rides", engine)
    engine.dispose()
    with pytest.raises(DataError, match=r"no table 'trips' .* tables there: rides"):
        read_trips(f"sqlite:///{tmp_path / 'other.db'}")


def test_an_empty_file_gives_an_empty_frame_and_no_batches(tmp_path: Path) -> None:
    path = write_month(synthesize_month("green", JAN, 0), tmp_path, "green", JAN)
    df = read_trips(path)
    assert list(df.columns) == OUTPUT_COLUMNS and df.empty
    assert str(df["PULocationID"].dtype) == "Int64" and df["source_row"].dtype == np.int64
    assert list(iter_trip_batches(path)) == []

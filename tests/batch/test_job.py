"""score_month on real files and the real model: what is scored, what is rejected and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ridecast.batch.job import REJECT_REASONS, score_month
from ridecast.batch.ride_ids import month_base
from ridecast.batch.sinks import DirectorySink, MonthKey
from ridecast.batch.sources import open_source
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError, ModelError
from ridecast.features import prepare_features
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import DIRT, LONG_RIDE_ROW, MONTH, expected_reasons, make_dirty_month

GREEN = TaxiType.GREEN


def _score(path: Path | str, predictor: Predictor, sink: DirectorySink, **kw: object):  # type: ignore[no-untyped-def]
    source = open_source(str(path), taxi_type=GREEN, month=MONTH, data_dir=Path("."))
    return score_month(GREEN, MONTH, predictor, source, sink, **kw)  # type: ignore[arg-type]


def _key(predictor: Predictor, run_id: str = "") -> MonthKey:
    return MonthKey(GREEN, MONTH, predictor.name, predictor.version, run_id)


def test_dirty_month_every_row_is_scored_or_rejected_with_its_reason(
    dirty_file: Path, predictor: Predictor, tmp_path: Path
) -> None:
    sink = DirectorySink(tmp_path / "out")
    summary = _score(dirty_file, predictor, sink, chunk_rows=700)  # several chunks

    predictions = pq.read_table(sink.path(_key(predictor)))
    rejects = pq.read_table(sink.path(_key(predictor), rejects=True))
    source = pq.read_table(dirty_file)
    base = month_base(GREEN, MONTH)

    # read = scored + rejected, in the summary and in the files.
    assert summary.rows_read == source.num_rows == 3000
    assert summary.rows_read == summary.rows_scored + summary.rows_rejected
    assert predictions.num_rows == summary.rows_scored
    assert rejects.num_rows == summary.rows_rejected
    ids = np.concatenate([predictions["ride_id"].to_numpy(), rejects["ride_id"].to_numpy()])
    assert np.array_equal(np.sort(ids), base + np.arange(3000))

    # Each reason: the injected rows get theirs, and the counts match an independent check.
    reason_of = dict(
        zip(
            (rejects["ride_id"].to_numpy() - base).tolist(),
            rejects["reason"].to_pylist(),
            strict=True,
        )
    )
    for row, reason in DIRT.items():
        assert reason_of.get(row) == reason, row
    assert LONG_RIDE_ROW not in reason_of
    expected = expected_reasons(source)
    for reason in REJECT_REASONS:
        assert summary.rejected[reason] == int((expected == reason).sum()), reason
    assert summary.rows_scored == int((expected == "").sum())
    assert set(summary.rejected) == set(REJECT_REASONS)
    # Rejected rows keep their raw values so people can see what was wrong.
    negative = rejects.filter(pc.equal(rejects["ride_id"], base + 6))
    assert negative["trip_distance"].to_pylist() == [-1.2]
    assert rejects.filter(pc.equal(rejects["ride_id"], base))["PULocationID"].to_pylist() == [None]


def test_predictions_are_the_course_features_through_the_same_model(
    trained: Trained, predictor: Predictor, tmp_path: Path
) -> None:
    month_file = trained.data_dir / "green_tripdata_2025-02.parquet"
    sink = DirectorySink(tmp_path / "out")
    summary = _score(month_file, predictor, sink)
    out = pq.read_table(sink.path(_key(predictor)))
    source = pq.read_table(month_file)
    rows = out["ride_id"].to_numpy() - month_base(GREEN, MONTH)
    picked = source.take(pa.array(rows)).to_pylist()

    # The course's per-ride dicts through the fitted pipeline give the same numbers.
    dicts = [prepare_features(r) for r in picked]
    course = predictor.loaded.model.pipeline.predict(dicts)
    predicted = out["predicted_duration"].to_numpy()
    assert np.max(np.abs(course - predicted)) < 1e-9

    minutes = np.array(
        [
            (r["lpep_dropoff_datetime"] - r["lpep_pickup_datetime"]).total_seconds() / 60
            for r in picked
        ]
    )
    assert np.allclose(out["actual_duration"].to_numpy(), minutes)
    assert np.allclose(out["diff"].to_numpy(), minutes - predicted)
    assert out["PULocationID"].to_pylist() == [r["PULocationID"] for r in picked]
    assert set(out["model_version"].to_pylist()) == {predictor.version}
    assert set(out["run_id"].to_pylist()) == {summary.run_id}
    assert out.column_names == [
        "ride_id",
        "pickup_datetime",
        "PULocationID",
        "DOLocationID",
        "actual_duration",
        "predicted_duration",
        "diff",
        "model_version",
        "run_id",
    ]

    # The closing summary's figures are those of the written rows.
    assert summary.mean == pytest.approx(predicted.mean())
    assert summary.std == pytest.approx(predicted.std())
    assert summary.rmse == pytest.approx(np.sqrt(np.mean((minutes - predicted) ** 2)))


def test_old_files_with_other_dtypes_and_letter_case_are_read(
    predictor: Predictor, tmp_path: Path
) -> None:
    # Before 2023 TLC files had double zone ids, nanosecond timestamps and other spellings.
    month = make_dirty_month(rows=1500, seed=3)
    old = pa.table(
        {
            "VendorID": month["VendorID"],
            "LPEP_PICKUP_DATETIME": month["lpep_pickup_datetime"].cast(pa.timestamp("ns")),
            "lpep_dropoff_datetime": month["lpep_dropoff_datetime"].cast(pa.timestamp("ns")),
            "PUlocationID": month["PULocationID"].cast(pa.float64()),
            "DOlocationID": month["DOLocationID"].cast(pa.float64()),
            "trip_distance": month["trip_distance"],
        }
    )
    pq.write_table(old, tmp_path / "old.parquet")
    pq.write_table(month, tmp_path / "new.parquet")
    old_summary = _score(tmp_path / "old.parquet", predictor, DirectorySink(tmp_path / "a"))
    new_summary = _score(tmp_path / "new.parquet", predictor, DirectorySink(tmp_path / "b"))
    assert old_summary.rejected == new_summary.rejected
    assert old_summary.rows_scored == new_summary.rows_scored
    assert old_summary.rmse == pytest.approx(new_summary.rmse, rel=1e-12)


def test_wrong_taxi_type_and_fhv_files_are_named_in_the_error(
    dirty_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=r"green trips.*--taxi-type green"):
        open_source(str(dirty_file), taxi_type=TaxiType.YELLOW, month=MONTH, data_dir=tmp_path)
    fhv = pa.table({"pickup_datetime": pa.array([0], pa.timestamp("us")), "PUlocationID": [1]})
    pq.write_table(fhv, tmp_path / "fhv.parquet")
    with pytest.raises(DataError, match=r"fhv.parquet lacks column\(s\).*trip_distance"):
        open_source(
            str(tmp_path / "fhv.parquet"), taxi_type=TaxiType.FHV, month=MONTH, data_dir=tmp_path
        )
    with pytest.raises(DataError, match="no green trip file for 2025-07"):
        open_source(None, taxi_type=GREEN, month=Month(2025, 7), data_dir=tmp_path)
    with pytest.raises(DataError, match="no files match"):
        open_source(
            str(tmp_path / "nope-*.parquet"), taxi_type=GREEN, month=MONTH, data_dir=tmp_path
        )


def test_a_model_of_another_target_is_refused(
    trained: Trained, dirty_file: Path, tmp_path: Path
) -> None:
    tip = trained.registry.predictor("models:/ride-tip@champion")  # type: ignore[attr-defined]
    with pytest.raises(ModelError, match="predicts tip"):
        _score(dirty_file, tip, DirectorySink(tmp_path / "out"))
    assert not (tmp_path / "out").exists()

"""Drift on real synthetic TLC months and a real model: shifted months are flagged, the same
month unshifted is not, odometer outliers do not hide a shift, and the CLI reports it all."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from typer.testing import CliRunner

from ridecast.cli import app
from ridecast.data.readers import filter_training, filter_training_rows, read_trips
from ridecast.data.schema import Month
from ridecast.data.synth import synthesize_month, write_month
from ridecast.errors import DataError
from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.monitoring.drift import (
    CHI_SQUARE,
    DISTANCE_THRESHOLD,
    JENSEN_SHANNON,
    KS,
    WASSERSTEIN,
    DriftReport,
    chi_square_p_value,
    compare,
    jensen_shannon,
    ks_p_value,
    month_drift,
    recent_drift,
    sampling_noise,
    wasserstein_normed,
)
from ridecast.predictor import Predictor
from ridecast.registry import Registry
from ridecast.settings import Settings, get_settings
from tests.conftest import TAXI, VALID_MONTH, Trained

MONTH = Month(2025, 3)
ROWS = 20_000
# Upper East Side and Midtown zones: where yellow cabs start, green cabs rarely do.
MOVED_TO = (236, 237, 161, 162, 230)
SHIFTED = {"PULocationID", "trip_distance", "prediction"}
RIDECAST = [sys.executable, "-m", "ridecast"]


@dataclass
class Months:
    """Data folders that each hold the models' reference month (their validation month) and
    one March: as synthesized, shifted on purpose, and shifted with odometer outliers."""

    trained: Trained
    unshifted: Settings
    shifted: Settings
    dirty: Settings

    @property
    def registry(self) -> Registry:
        return cast(Registry, self.trained.registry)

    def env(self, settings: Settings) -> dict[str, str]:
        return {**self.trained.env(), "RIDECAST_DATA_DIR": str(settings.resolved_data_dir)}


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table[name].to_numpy(zero_copy_only=False)


def _with(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))


def shift(table: pa.Table, seed: int) -> pa.Table:
    """Every distance x 1.5, and 40% of the pickups moved to other zones."""
    rng = np.random.default_rng(seed)
    pickups = _column(table, "PULocationID").copy()
    moved = rng.random(pickups.size) < 0.4
    pickups[moved] = rng.choice(MOVED_TO, int(moved.sum()))
    table = _with(table, "trip_distance", _column(table, "trip_distance") * 1.5)
    return _with(table, "PULocationID", pickups)


def with_odometer_outliers(table: pa.Table, seed: int, share: float = 0.002) -> pa.Table:
    """Distances of 1,000 to 30,000 miles on ``share`` of the rides, their times left as they
    were: meter glitches that the duration filter alone does not catch."""
    rng = np.random.default_rng(seed)
    distances = _column(table, "trip_distance").copy()
    glitch = rng.random(distances.size) < share
    distances[glitch] = np.round(10 ** rng.uniform(3.0, 4.5, int(glitch.sum())), 2)
    return _with(table, "trip_distance", distances)


@pytest.fixture(scope="module")
def months(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Months:
    reference_file = trained.data_dir / f"green_tripdata_{VALID_MONTH}.parquet"
    march = synthesize_month(TAXI, MONTH, ROWS, seed=3)
    variants = {
        "unshifted": (reference_file, march),
        "shifted": (reference_file, shift(march, seed=30)),
        "dirty": (None, with_odometer_outliers(_distances_shifted(march), seed=31)),
    }
    folders = {}
    for name, (reference, current) in variants.items():
        folder = tmp_path_factory.mktemp(f"drift-{name}")
        if reference is not None:
            (folder / reference.name).symlink_to(reference)
        else:
            dirty_reference = with_odometer_outliers(pq.read_table(reference_file), seed=32)
            write_month(dirty_reference, folder, TAXI, VALID_MONTH)
        write_month(current, folder, TAXI, MONTH)
        folders[name] = trained.settings.model_copy(update={"data_dir": folder})
    return Months(trained, folders["unshifted"], folders["shifted"], folders["dirty"])


def _distances_shifted(table: pa.Table) -> pa.Table:
    return _with(table, "trip_distance", _column(table, "trip_distance") * 1.5)


def model_rows(settings: Settings, month: Month, predictor: Predictor) -> pd.DataFrame:
    """A month's rows as training keeps them, with the model's predictions."""
    path = settings.resolved_data_dir / f"green_tripdata_{month}.parquet"
    rows = filter_training_rows(read_trips(path, TAXI, month))
    frame = pd.DataFrame(
        {
            "PULocationID": rows["PULocationID"].to_numpy("int64"),
            "DOLocationID": rows["DOLocationID"].to_numpy("int64"),
            "trip_distance": rows["trip_distance"].to_numpy("float64"),
        }
    )
    frame["prediction"] = predictor.predict_frame(frame)
    return frame


def methods(report: DriftReport) -> dict[str, str]:
    return {c.column: c.method for c in report.columns}


# --------------------------------------------------------------------------- the arithmetic


def test_normed_wasserstein_is_the_distance_in_reference_stds() -> None:
    # Moving every value of [0, 1, 2, 3] by 1 costs exactly 1; the population std is sqrt(1.25).
    assert wasserstein_normed(np.array([0.0, 1, 2, 3]), np.array([1.0, 2, 3, 4])) == (
        pytest.approx(1 / math.sqrt(1.25))
    )
    # Through compare (more than 1,000 rows each): a shift of 0.25 on an even grid over [0, 1].
    grid = np.linspace(0.0, 1.0, 2001)
    report = compare(
        pd.DataFrame({"trip_distance": grid}),
        pd.DataFrame({"trip_distance": grid + 0.25}),
        reference_label="grid",
        current_label="grid + 0.25",
        columns=["trip_distance"],
    )
    result = report.column("trip_distance")
    direct = stats.wasserstein_distance(grid, grid + 0.25) / np.std(grid)
    assert result.method == WASSERSTEIN
    assert result.score == pytest.approx(direct) == pytest.approx(0.25 / np.std(grid))
    assert result.drifted and report.dataset_drifted


def test_jensen_shannon_is_a_distance_in_nats_over_the_union_of_categories() -> None:
    # {a, b} against {b, c}: each side misses one category; no smoothing, natural log, and the
    # square root of the divergence: sqrt(ln(2) / 2).
    assert jensen_shannon(np.array([1, 1, 0]), np.array([0, 1, 1])) == pytest.approx(
        math.sqrt(math.log(2) / 2)
    )
    assert jensen_shannon(np.array([5, 0]), np.array([0, 7])) == pytest.approx(
        math.sqrt(math.log(2))
    )


def test_chi_square_on_two_categories_is_the_two_proportion_z_test() -> None:
    # 60 of 100 against 45 of 100: pooled share 0.525, z = 0.15 / sqrt(P(1-P)(1/100 + 1/100)).
    z = 0.15 / math.sqrt(0.525 * 0.475 * (2 / 100))
    assert chi_square_p_value(np.array([60, 40]), np.array([45, 55])) == pytest.approx(
        math.erfc(z / math.sqrt(2))
    )


def test_chi_square_pools_categories_too_rare_to_test() -> None:
    # One ride in a zone the reference never saw is no evidence of drift (a goodness-of-fit
    # test against the reference shares would divide by zero and call it certain drift).
    assert chi_square_p_value(np.array([500, 500, 0]), np.array([250, 249, 1])) > 0.5
    assert chi_square_p_value(np.array([500, 500, 0]), np.array([100, 100, 300])) < 1e-6
    # Nothing left to compare: no evidence either way.
    assert chi_square_p_value(np.array([3, 1]), np.array([1, 0])) == 1.0


def test_ks_p_value_is_scipys() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 300), rng.normal(0.5, 1, 300)
    assert ks_p_value(a, b) == pytest.approx(stats.ks_2samp(a, b).pvalue)
    assert ks_p_value(a, b) < 0.05 < ks_p_value(a, rng.normal(0, 1, 300))


def test_sampling_noise_predicts_jensen_shannon_between_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(11)
    shares = rng.dirichlet(np.full(240, 0.5))
    for n_current in (2_000, 20_000):
        measured = [
            jensen_shannon(rng.multinomial(20_000, shares), rng.multinomial(n_current, shares))
            for _ in range(5)
        ]
        categories = int((shares > 0).sum())
        expected = sampling_noise(categories, 20_000, n_current)
        assert np.mean(measured) == pytest.approx(expected, rel=0.15)


def test_zones_in_a_small_current_sample_get_chi_square_not_noise() -> None:
    """2,000 rides from the reference's own distribution: Jensen-Shannon would read > 0.1 from
    sampling alone, so the zones are tested instead, and nothing drifts."""
    rng = np.random.default_rng(5)
    shares = rng.dirichlet(np.full(240, 0.5))
    zones = np.arange(1, 241)
    reference = pd.DataFrame({"PULocationID": rng.choice(zones, 20_000, p=shares)})
    current = pd.DataFrame({"PULocationID": rng.choice(zones, 2_000, p=shares)})
    counts = [np.bincount(f["PULocationID"], minlength=241) for f in (reference, current)]
    assert jensen_shannon(*counts) >= DISTANCE_THRESHOLD  # what Evidently's default would say
    report = compare(
        reference, current, reference_label="r", current_label="c", columns=["PULocationID"]
    )
    result = report.column("PULocationID")
    assert result.method == CHI_SQUARE and not result.drifted
    assert result.noise is not None and result.noise >= 0.075


def test_numeric_columns_with_few_values_are_compared_as_categories() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"prediction": rng.choice([10.0, 20.0, 30.0], 5_000)})
    current = pd.DataFrame({"prediction": rng.choice([10.0, 20.0, 30.0], 5_000, p=[0.6, 0.2, 0.2])})
    large = compare(
        reference, current, reference_label="r", current_label="c", columns=["prediction"]
    )
    small = compare(
        reference.head(900),
        current.head(900),
        reference_label="r",
        current_label="c",
        columns=["prediction"],
    )
    for report, method in ((large, JENSEN_SHANNON), (small, CHI_SQUARE)):
        result = report.column("prediction")
        assert result.kind == "numeric" and result.method == method and result.drifted
        assert result.histogram is None
        assert {c.category for c in result.categories} == {"10", "20", "30"}


def test_compare_names_a_missing_column_and_an_empty_side() -> None:
    frame = pd.DataFrame({"trip_distance": [1.0, 2.0]})
    full = frame.assign(PULocationID=1, DOLocationID=2, prediction=3.0)
    with pytest.raises(DataError, match=r"march: no prediction column; found trip_distance, PU"):
        compare(full, full.drop(columns="prediction"), reference_label="feb", current_label="march")
    empty = pd.DataFrame({"trip_distance": [np.nan, np.inf]})
    with pytest.raises(DataError, match=r"march: no rows with a trip_distance"):
        compare(
            frame, empty, reference_label="feb", current_label="march", columns=["trip_distance"]
        )


# --------------------------------------------------------------------------- months and a model


def test_shifted_month_flags_pickups_distance_and_prediction(months: Months) -> None:
    report = month_drift(months.shifted, TAXI, MONTH, registry=months.registry)
    assert set(report.drifted_columns) == SHIFTED  # drop-offs were left as they were
    assert report.dataset_drifted and report.share_drifted == 0.75
    assert methods(report) == {
        "PULocationID": JENSEN_SHANNON,
        "DOLocationID": JENSEN_SHANNON,
        "trip_distance": WASSERSTEIN,
        "prediction": WASSERSTEIN,
    }
    distance = report.column("trip_distance")
    assert distance.reference_mean is not None
    assert distance.current_mean == pytest.approx(1.5 * distance.reference_mean, rel=0.05)
    assert distance.histogram is not None and sum(distance.histogram.current) == pytest.approx(1)
    moved = {c.category for c in report.column("PULocationID").categories}
    assert set(map(str, MOVED_TO)) <= moved
    assert report.reference_label == f"green {VALID_MONTH} (validation month of ride-duration v1)"
    assert report.model == "ride-duration v1"
    json.dumps(report.to_dict())  # plain JSON types only


def test_same_month_unshifted_flags_nothing(months: Months) -> None:
    report = month_drift(months.unshifted, TAXI, MONTH, registry=months.registry)
    assert report.drifted_columns == ()
    assert not report.dataset_drifted and report.share_drifted == 0.0
    for result in report.columns:
        assert result.score < DISTANCE_THRESHOLD / 1.5, result  # well clear, not by luck
        assert result.reference_rows > 19_000 and result.current_rows > 19_000


def test_odometer_outliers_do_not_hide_a_distance_shift(months: Months) -> None:
    dirty = months.dirty.resolved_data_dir
    reference, current = (
        filter_training(read_trips(dirty / f"green_tripdata_{m}.parquet", TAXI, m))["trip_distance"]
        for m in (VALID_MONTH, MONTH)
    )
    assert reference.max() > 1_000 and current.max() > 1_000
    # On every row the course's cleaning keeps, the outliers inflate the reference std so much
    # that a 1.5x shift of every distance scores as no drift at all.
    raw = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert raw < DISTANCE_THRESHOLD / 2

    report = month_drift(months.dirty, TAXI, MONTH, registry=months.registry)
    distance = report.column("trip_distance")
    assert distance.drifted and distance.score > 0.3
    assert distance.reference_mean is not None and distance.reference_mean < 10
    # Distance and prediction: two of four columns, exactly the share at which a dataset drifts.
    assert set(report.drifted_columns) == {"trip_distance", "prediction"}
    assert report.share_drifted == 0.5 and report.dataset_drifted


def test_small_reference_uses_ks_and_chi_square(months: Months) -> None:
    predictor = months.registry.predictor("models:/ride-duration@champion")
    reference = model_rows(months.unshifted, VALID_MONTH, predictor).sample(800, random_state=1)
    for settings, flagged in ((months.shifted, SHIFTED), (months.unshifted, set())):
        current = model_rows(settings, MONTH, predictor)
        report = compare(reference, current, reference_label="800 rides", current_label="march")
        assert set(report.drifted_columns) == flagged
        assert methods(report) == {
            "PULocationID": CHI_SQUARE,
            "DOLocationID": CHI_SQUARE,
            "trip_distance": KS,
            "prediction": KS,
        }
        assert report.column("trip_distance").reference_rows == 800


def test_recent_requests_from_the_prediction_log(months: Months, tmp_path: Path) -> None:
    settings = months.unshifted.model_copy(
        update={"prediction_log_url": f"sqlite:///{tmp_path / 'log.db'}"}
    )
    with pytest.raises(DataError, match=r"no prediction log at .*log\.db"):
        recent_drift(settings, 100, registry=months.registry)
    predictor = months.registry.predictor("models:/ride-duration@champion")
    log = PredictionLog(settings.resolved_prediction_log_url)

    def log_rows(frame: pd.DataFrame, arm: str = "stable") -> None:
        log.log(
            PredictionBatch(
                "ride-duration",
                predictor.version,
                "test",
                frame["PULocationID"].to_numpy(),
                frame["DOLocationID"].to_numpy(),
                frame["trip_distance"].to_numpy(),
                frame["prediction"].to_numpy(),
                1.0,
                arm=arm,
            )
        )
        log.flush()

    try:
        log_rows(model_rows(months.unshifted, MONTH, predictor).head(5_000))
        calm = recent_drift(settings, 5_000, registry=months.registry)
        assert calm.drifted_columns == () and calm.column("prediction").current_rows == 5_000

        log_rows(model_rows(months.shifted, MONTH, predictor).head(5_000))
        # Shadow answers (no caller saw them) come last and must not count.
        odd = pd.DataFrame(
            {"PULocationID": 1, "DOLocationID": 1, "trip_distance": 99.0, "prediction": 999.0},
            index=range(300),
        )
        log_rows(odd, arm="shadow")
        report = recent_drift(settings, 5_000, registry=months.registry)
    finally:
        log.close()
    assert set(report.drifted_columns) == SHIFTED
    assert report.column("prediction").current_mean == pytest.approx(
        float(model_rows(months.shifted, MONTH, predictor).head(5_000)["prediction"].mean())
    )
    # 5,000 requests over ~240 zones: Jensen-Shannon would mostly measure sampling noise.
    assert methods(report)["DOLocationID"] == CHI_SQUARE
    assert methods(report)["trip_distance"] == WASSERSTEIN
    assert report.current_label == "last 5,000 logged ride-duration predictions"


# --------------------------------------------------------------------------- the command


@pytest.fixture
def cli_env(months: Months, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in months.trained.env().items():
        if key.startswith(("RIDECAST_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(app, ["monitor", "drift", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_cli_table_and_self_contained_html(months: Months, cli_env: None, tmp_path: Path) -> None:
    page = tmp_path / "drift.html"
    shifted = ["--data-dir", str(months.shifted.resolved_data_dir)]
    result = invoke(["--taxi-type", "green", "--month", str(MONTH), *shifted, "--html", str(page)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}
    for column in SHIFTED:
        assert "DRIFT" in lines[column], result.output
    assert "DRIFT" not in lines["DOLocationID"]
    assert "DATASET DRIFT 3 of 4 columns drifted (share 0.75 >= 0.5)" in " ".join(
        result.output.split()
    )

    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") == 2  # distance and prediction histograms
    assert html.count('class="badge drift"') == 2 * len(SHIFTED)  # summary and sections
    for external in ("http", "<script", "<link", "src=", "url(", "@import"):
        assert external not in html, external

    calm = invoke(["--month", str(MONTH), "--data-dir", str(months.unshifted.resolved_data_dir)])
    assert calm.exit_code == 0
    assert "no dataset drift 0 of 4 columns drifted" in " ".join(calm.output.split())

    failing = invoke(["--month", str(MONTH), *shifted, "--fail-on-drift", "--json"])
    assert failing.exit_code == 1 and json.loads(failing.stdout)["dataset_drifted"] is True


def test_cli_prints_json_alone_on_stdout(months: Months) -> None:
    """A real process: stdout is the JSON document and nothing else (progress goes to stderr)."""
    result = subprocess.run(
        [*RIDECAST, "monitor", "drift", "--month", str(MONTH), "--json"],
        env=months.env(months.shifted),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["drifted_columns"]) == SHIFTED and report["dataset_drifted"] is True
    assert {c["column"]: c["method"] for c in report["columns"]}["PULocationID"] == JENSEN_SHANNON
    assert report["reference_label"].startswith(f"green {VALID_MONTH}")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--month", "2025-13"], ["--month 2025-13", "YYYY-MM"]),
        (["--month", "2025-03", "--taxi-type", "purple"], ["--taxi-type purple", "green"]),
        (["--month", "2025-03", "--taxi-type", "fhv"], ["fhv", "--taxi-type green or yellow"]),
        (["--month", "2025-03", "--reference", "march"], ["--reference march", "YYYY-MM"]),
        (["--month", "2024-07"], ["green_tripdata_2024-07.parquet", "ridecast data synth"]),
        ([], ["--month", "--last"]),
        (["--month", "2025-03", "--last", "10"], ["exactly one"]),
    ],
)
def test_cli_errors_are_one_line(months: Months, args: list[str], needles: list[str]) -> None:
    result = subprocess.run(
        [*RIDECAST, "monitor", "drift", *args],
        env={**months.env(months.unshifted), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_missing_reference_month_is_named_as_the_reference(months: Months) -> None:
    with pytest.raises(DataError) as caught:
        month_drift(months.unshifted, TAXI, MONTH, "2024-11", registry=months.registry)
    message = str(caught.value)
    assert message.startswith("reference green 2024-11: no green trip file for 2024-11")
    assert "ridecast data synth --taxi-type green --month 2024-11" in message


def test_drift_module_imports_no_deployment_mode() -> None:
    code = (
        "import sys, ridecast.monitoring.drift, ridecast.monitoring.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('ridecast.web', "
        "'ridecast.stream', 'ridecast.batch'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert out.stdout.strip() == "[]", out.stderr

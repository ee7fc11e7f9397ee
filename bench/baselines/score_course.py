"""The course's ``score.py`` approach, kept as the batch benchmark's baseline.

pandas reads the whole file, computes the duration and keeps 1..60 minutes, builds the ``PU_DO``
feature as strings, turns the rows into dicts with ``to_dict(orient="records")``, and the fitted
DictVectorizer pipeline predicts; the result frame goes out with ``to_parquet``.

It uses the same registered model as ridecast (the RideModel's scikit-learn ``pipeline``, loaded
through MLflow as the course does). One change: the course gives each ride a ``uuid4`` string; here
the ride id is ridecast's integer id of the same row, so the two outputs can be joined (this makes
the baseline faster, not slower).

    python bench/baselines/score_course.py --input green_tripdata_2025-02.parquet \
        --output out.parquet --model models:/ride-duration@champion --month 2025-02
"""

from __future__ import annotations

import argparse

import pandas as pd
from course_model import course_pipeline

from ridecast.batch.ride_ids import month_base
from ridecast.data.schema import parse_month, parse_taxi_type


def read_dataframe(filename: str, taxi_type: str) -> pd.DataFrame:
    prefix = {"green": "lpep", "yellow": "tpep"}[taxi_type]
    df = pd.read_parquet(filename)
    df["duration"] = df[f"{prefix}_dropoff_datetime"] - df[f"{prefix}_pickup_datetime"]
    df.duration = df.duration.dt.total_seconds() / 60
    df = df[(df.duration >= 1) & (df.duration <= 60)].copy()
    return df


def prepare_dictionaries(df: pd.DataFrame) -> list[dict[str, object]]:
    categorical = ["PULocationID", "DOLocationID"]
    df[categorical] = df[categorical].astype(str)
    df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    return df[["PU_DO", "trip_distance"]].to_dict(orient="records")  # type: ignore[return-value]


def apply_model(input_file: str, model_uri: str, output_file: str, taxi: str, month: str) -> None:
    df = read_dataframe(input_file, taxi)
    dicts = prepare_dictionaries(df)
    pipeline, version = course_pipeline(model_uri)
    y_pred = pipeline.predict(dicts)

    prefix = {"green": "lpep", "yellow": "tpep"}[taxi]
    df_result = pd.DataFrame()
    df_result["ride_id"] = month_base(parse_taxi_type(taxi), parse_month(month)) + df.index
    df_result["pickup_datetime"] = df[f"{prefix}_pickup_datetime"]
    df_result["PULocationID"] = df["PULocationID"]
    df_result["DOLocationID"] = df["DOLocationID"]
    df_result["actual_duration"] = df["duration"]
    df_result["predicted_duration"] = y_pred
    df_result["diff"] = df_result["actual_duration"] - df_result["predicted_duration"]
    df_result["model_version"] = str(version)
    df_result.to_parquet(output_file, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default="models:/ride-duration@champion")
    parser.add_argument("--taxi-type", default="green")
    parser.add_argument("--month", required=True)
    args = parser.parse_args()
    apply_model(args.input, args.model, args.output, args.taxi_type, args.month)


if __name__ == "__main__":
    main()

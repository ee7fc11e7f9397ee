"""The vectorized feature path gives exactly the per-ride path's model input and predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction import DictVectorizer

from ridecast.features import PairEncoder, RideArrays, prepare_features, rides_to_dicts
from ridecast.training import build_model


def _random_rides(n: int, seed: int) -> RideArrays:
    rng = np.random.default_rng(seed)
    return RideArrays(
        pu=rng.integers(1, 266, n),
        do=rng.integers(1, 266, n),
        distance=np.round(rng.exponential(3.0, n), 2),
    )


def test_prepare_features_is_the_course_shape() -> None:
    ride = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}
    assert prepare_features(ride) == {"PU_DO": "10_50", "trip_distance": 40.0}
    # Zone ids that arrive as floats (nullable columns) still give the course's key.
    assert prepare_features({**ride, "PULocationID": 10.0})["PU_DO"] == "10_50"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_matrix_equals_dictvectorizer(seed: int) -> None:
    train = _random_rides(5_000, seed)
    vectorizer = DictVectorizer().fit(rides_to_dicts(train))
    rides = _random_rides(2_000, seed + 100)  # many pairs unseen in training
    rides.distance[:50] = 0.0  # explicit zeros are kept by DictVectorizer too
    pu = np.append(rides.pu, [300, 7, 0])
    do = np.append(rides.do, [5, 9999, 0])
    dist = np.append(rides.distance, [1.0, 2.0, 3.0])
    rides = RideArrays(pu, do, dist)

    expected = vectorizer.transform(rides_to_dicts(rides))
    actual = PairEncoder(vectorizer).encode(rides)

    assert actual.shape == expected.shape
    assert (actual != expected).nnz == 0
    assert np.array_equal(actual.toarray(), expected.toarray())


@pytest.mark.parametrize("algorithm", ["linear", "ridge", "gbm"])
def test_fast_predictions_equal_pipeline_predictions(algorithm: str) -> None:
    rides = _random_rides(8_000, 7)
    y = (
        4.0
        + 2.5 * rides.distance
        + (rides.pu % 7)
        + np.random.default_rng(3).normal(0, 2, len(rides))
    )
    model = build_model(algorithm, rides, y, "duration")
    test = _random_rides(1_000, 8)
    fast = model.predict_arrays(test)
    if model.uses_vectorizer:
        slow = model.pipeline.predict(rides_to_dicts(test))
    else:
        slow = model.pipeline.predict(np.column_stack([test.pu, test.do, test.distance]))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    assert model.predict_arrays(RideArrays(test.pu[:0], test.do[:0], test.distance[:0])).shape == (
        0,
    )


@pytest.mark.parametrize("algorithm", ["linear", "ridge", "gbm"])
def test_the_one_ride_form_gives_the_vectorized_floats_exactly(algorithm: str) -> None:
    """The web answers a linear model's single rides in plain Python: bit for bit the floats of
    predict_arrays, for pairs seen and unseen in training and ids outside the zone table."""
    rides = _random_rides(8_000, 11)
    y = 3.0 + 2.0 * rides.distance + (rides.do % 5)
    model = build_model(algorithm, rides, y, "duration")
    answer = model.answer_one()
    if algorithm == "gbm":
        assert answer is None  # not a lookup: predicted in batches
        return
    assert answer is not None
    test = _random_rides(3_000, 12)
    pu = np.append(test.pu, [300, 7, 0, 265, 4000])
    do = np.append(test.do, [5, 9999, 0, 265, 1])
    distance = np.append(test.distance, [1.0, 2.0, 0.0, 250.5, 3.3])
    vectorized = model.predict_arrays(RideArrays(pu, do, distance)).tolist()
    rows = zip(pu.tolist(), do.tolist(), distance.tolist(), strict=True)
    one_by_one = [answer(p, d, x) for p, d, x in rows]
    assert one_by_one == vectorized


def test_vocabulary_matches_fitting_on_every_ride() -> None:
    rides = _random_rides(3_000, 11)
    y = rides.distance * 3
    model = build_model("linear", rides, y, "duration")
    assert (
        model.pipeline.steps[0][1].vocabulary_
        == DictVectorizer().fit(rides_to_dicts(rides)).vocabulary_
    )

"""The A/B statistics: the confidence sequence's form, its τ² choice, and its error rates.

The simulations draw absolute errors from a gamma distribution (skewed and positive, like real
ones) and read the interval after every single observation, as the controller may.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ridecast.rollout.stats import (
    best_ratio,
    confidence_sequence,
    paired_ci,
    paired_sequence,
    radius,
    tau2_for_sample_size,
    two_sample_sequence,
)

ALPHA = 0.05


def test_interval_is_the_normal_mixture_boundary() -> None:
    d, V, tau2 = 0.3, 0.01, 0.05
    low, high = confidence_sequence(d, V, tau2, ALPHA)
    r = math.sqrt(V * (V + tau2) / tau2 * (math.log((V + tau2) / V) + 2 * math.log(1 / ALPHA)))
    assert low == pytest.approx(d - r) and high == pytest.approx(d + r)
    # Always wider than the fixed-sample interval at the same V: that is the price of peeking.
    assert r > 1.96 * math.sqrt(V)


def test_bad_arguments_are_refused() -> None:
    for args in ((0.0, 0.0, 1.0, ALPHA), (0.0, 1.0, 0.0, ALPHA), (0.0, 1.0, 1.0, 1.5)):
        with pytest.raises(ValueError):
            confidence_sequence(*args)
    with pytest.raises(ValueError):
        paired_ci(0.0, 1.0, 1)


def test_tau2_choice_makes_the_interval_narrowest_at_the_decision_size() -> None:
    r = best_ratio(ALPHA)
    assert r == pytest.approx(2 * math.log(1 / ALPHA) + math.log1p(r))
    v_now, n_now, decision_n = 0.02, 400, 2000
    tau2 = tau2_for_sample_size(v_now, n_now, decision_n, ALPHA)
    v_at_n = v_now * n_now / decision_n
    grid = tau2 * np.geomspace(0.05, 20, 401)
    widths = radius(v_at_n, grid, ALPHA)
    assert grid[int(np.argmin(widths))] == pytest.approx(tau2, rel=0.05)


def test_paired_ci_covers_at_its_level() -> None:
    rng = np.random.default_rng(7)
    diffs = rng.normal(0.4, 2.0, size=(4000, 50))
    m, v = diffs.mean(axis=1), diffs.var(axis=1, ddof=1)
    covered = sum(
        lo <= 0.4 <= hi
        for lo, hi in (paired_ci(a, b, 50, ALPHA) for a, b in zip(m, v, strict=True))
    )
    assert 0.93 <= covered / 4000 <= 0.97


def _running(x: np.ndarray, in_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per experiment and per observation: n, mean and sample variance of each arm so far."""
    out = []
    for mask in (~in_b, in_b):
        n = np.cumsum(mask, axis=1)
        s1 = np.cumsum(np.where(mask, x, 0.0), axis=1)
        s2 = np.cumsum(np.where(mask, x * x, 0.0), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n
            var = (s2 - n * mean * mean) / (n - 1)
        out += [n, mean, var]
    return tuple(out)


def _ever_excludes_zero(
    b_shift: float, seed: int, runs: int = 500, obs: int = 4000, naive: bool = False
) -> np.ndarray:
    """Simulates A/B tests (b's errors shifted by ``b_shift``); True where the sequence ever
    excluded 0 when read after every observation (each arm having ≥ 30 rides). ``naive`` reads a
    fixed-sample 95% interval instead, to show what peeking does to it."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(shape=2.0, scale=1.5, size=(runs, obs))  # |error| in minutes, mean 3
    in_b = rng.random((runs, obs)) < 0.5
    x = x + np.where(in_b, b_shift, 0.0)
    n_a, mean_a, var_a, n_b, mean_b, var_b = _running(x, in_b)
    ready = (n_a >= 30) & (n_b >= 30)
    with np.errstate(divide="ignore", invalid="ignore"):
        V = var_a / n_a + var_b / n_b
        tau2 = best_ratio(ALPHA) * V * (n_a + n_b) / 2000
        r = radius(np.where(ready, V, 1.0), np.where(ready, tau2, 1.0), ALPHA)
        if naive:
            r = 1.96 * np.sqrt(V)
    d = mean_b - mean_a
    excluded = ready & (np.abs(d) > r)
    return excluded.any(axis=1)


def test_aa_false_positive_rate_stays_below_alpha_when_read_after_every_observation() -> None:
    false_positives = _ever_excludes_zero(0.0, seed=1)
    assert false_positives.mean() < ALPHA
    # The same runs read with a fixed-sample interval: peeking makes it cry wolf far more often.
    assert _ever_excludes_zero(0.0, seed=1, naive=True).mean() > 3 * ALPHA


def test_a_real_difference_is_detected() -> None:
    # b is 0.5 min worse on average (σ ≈ 2.1): found in nearly every run within 4000 rides.
    assert _ever_excludes_zero(0.5, seed=2, runs=200).mean() > 0.9


def test_paired_sequence_aa_and_real_difference() -> None:
    rng = np.random.default_rng(3)
    for shift, check in ((0.0, lambda rate: rate < ALPHA), (0.3, lambda rate: rate > 0.9)):
        d = rng.normal(shift, 1.5, size=(500, 3000))
        n = np.arange(1, 3001)
        mean = np.cumsum(d, axis=1) / n
        var = (np.cumsum(d * d, axis=1) - n * mean * mean) / np.maximum(n - 1, 1)
        V = var / n
        r = radius(V, best_ratio(ALPHA) * V * n / 2000, ALPHA)
        hit = ((np.abs(mean) > r) & (n >= 30)).any(axis=1).mean()
        assert check(hit), (shift, hit)


def test_two_sample_and_paired_helpers_agree_with_the_formula() -> None:
    d, var, tau2, r = two_sample_sequence(3.0, 4.0, 500, 2.5, 4.5, 400, alpha=ALPHA)
    assert d == pytest.approx(-0.5)
    assert var == pytest.approx(4.0 / 500 + 4.5 / 400)
    assert tau2 == pytest.approx(tau2_for_sample_size(var, 900, 2000, ALPHA))
    assert r == pytest.approx(confidence_sequence(d, var, tau2, ALPHA)[1] - d)
    d, var, tau2, r = paired_sequence(0.2, 2.0, 100, alpha=ALPHA, tau2=0.5)
    assert (d, var, tau2) == (0.2, pytest.approx(0.02), 0.5)

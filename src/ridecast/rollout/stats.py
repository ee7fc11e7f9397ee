"""The A/B test's always-valid confidence sequence, and the shadow report's paired interval.

The sequence is the normal-mixture (mSPRT) boundary of Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (Ann. Statist., 2021). For an
estimate ``d̂`` with variance ``V``, and a mixing variance ``τ²`` over the true difference::

    d̂ ± sqrt( V(V+τ²)/τ² · ( ln((V+τ²)/V) + 2 ln(1/α) ) )

covers the true difference at every sample size at once with probability ≥ 1 − α, so the test can
be read after every ride without inflating false positives. ``τ²`` only moves where the interval is
tightest: with ``r = τ²/V`` the squared radius is ``V(1+1/r)(ln(1+r) + 2 ln(1/α))``, smallest
where ``r = 2 ln(1/α) + ln(1+r)`` (about 8.2 for α = 0.05). :func:`tau2_for_sample_size` sets
``τ² = r*·V(N)`` for the sample size ``N`` at which a decision is wanted.

Functions taking ``V`` accept numpy arrays, so simulations can check thousands of runs at once.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np


def radius(V: Any, tau2: Any, alpha: float) -> Any:
    """The half-width of the confidence sequence (float or array, as ``V`` and ``tau2`` are)."""
    V = np.asarray(V, dtype=float)
    tau2 = np.asarray(tau2, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = V * (V + tau2) / tau2 * (np.log((V + tau2) / V) + 2.0 * math.log(1.0 / alpha))
    out = np.sqrt(np.where(V > 0, r2, np.inf))
    return float(out) if out.ndim == 0 else out


def confidence_sequence(d_hat: float, V: float, tau2: float, alpha: float) -> tuple[float, float]:
    """The always-valid interval ``(low, high)`` for the true difference behind ``d_hat``."""
    if not (V > 0 and tau2 > 0 and 0 < alpha < 1):
        raise ValueError("confidence_sequence needs V > 0, tau2 > 0 and 0 < alpha < 1")
    r = float(radius(V, tau2, alpha))
    return (d_hat - r, d_hat + r)


def best_ratio(alpha: float) -> float:
    """``r* = τ²/V`` that makes the interval narrowest at ``V``: solves r = 2 ln(1/α) + ln(1+r)."""
    c = 2.0 * math.log(1.0 / alpha)
    r = c + 1.0
    for _ in range(100):  # a contraction (derivative 1/(1+r) < 1): converges in a few steps
        nxt = c + math.log1p(r)
        if abs(nxt - r) < 1e-12:
            break
        r = nxt
    return r


def tau2_for_sample_size(v_now: float, n_now: int, decision_n: int, alpha: float) -> float:
    """The τ² under which the interval is narrowest once ``decision_n`` samples have come in.

    With a fixed split between the arms the variance falls as 1/n, so the variance at the decision
    size is estimated as ``V(N) = V_now · n_now / N`` from the figures so far.
    """
    if not (v_now > 0 and n_now > 0 and decision_n > 0):
        raise ValueError("tau2_for_sample_size needs a positive variance and sample sizes")
    return best_ratio(alpha) * v_now * n_now / decision_n


def two_sample_variance(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """``V = s²_A/n_A + s²_B/n_B``: the variance of MAE_B − MAE_A from two independent arms."""
    return var_a / n_a + var_b / n_b


def paired_variance(var_diff: float, n: int) -> float:
    """The variance of the mean of ``n`` paired differences with sample variance ``var_diff``."""
    return var_diff / n


def two_sample_sequence(
    mae_a: float,
    var_a: float,
    n_a: int,
    mae_b: float,
    var_b: float,
    n_b: int,
    *,
    alpha: float,
    tau2: float | None = None,
    decision_n: int = 2000,
) -> tuple[float, float, float, float]:
    """The sequence on MAE_B − MAE_A from independent arms: ``(d_hat, V, tau2, radius)``.

    The interval is ``d_hat ± radius``; ``tau2`` None picks it for ``decision_n`` (both arms).
    """
    d_hat = mae_b - mae_a
    V = two_sample_variance(var_a, n_a, var_b, n_b)
    t2 = tau2 if tau2 is not None else tau2_for_sample_size(V, n_a + n_b, decision_n, alpha)
    return d_hat, V, t2, float(radius(V, t2, alpha))


def paired_sequence(
    mean_diff: float,
    var_diff: float,
    n: int,
    *,
    alpha: float,
    tau2: float | None = None,
    decision_n: int = 2000,
) -> tuple[float, float, float, float]:
    """The same on paired differences (both versions answered the same rides).

    Returns ``(d_hat, V, tau2, radius)``.
    """
    V = paired_variance(var_diff, n)
    t2 = tau2 if tau2 is not None else tau2_for_sample_size(V, n, decision_n, alpha)
    return mean_diff, V, t2, float(radius(V, t2, alpha))


def paired_ci(
    mean_diff: float, var_diff: float, n: int, alpha: float = 0.05
) -> tuple[float, float]:
    """A plain (fixed-sample, normal) ``1 − α`` interval for a mean paired difference.

    Right for a report read once, like the shadow's; not for reading again and again (use the
    sequence for that).
    """
    if n < 2:
        raise ValueError("paired_ci needs at least 2 pairs")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    half = z * math.sqrt(max(var_diff, 0.0) / n)
    return (mean_diff - half, mean_diff + half)

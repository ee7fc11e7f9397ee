"""The router: sticky, seeded assignment that holds its weights and moves few keys."""

from __future__ import annotations

import pickle

import pytest

from ridecast.rollout.router import Router, bucket, ride_keys, routing_key
from ridecast.rollout.state import RolloutState

KEYS = [f"u:{i}" for i in range(20_000)]


def _state(
    weight: int = 0,
    shadow: int = 0,
    phase: str = "progressing",
    rid: str = "r1",
    strategy: str = "canary",
) -> RolloutState:
    return RolloutState(
        id=rid,
        model="m",
        strategy=strategy,
        stable_version="1",
        candidate_version="2",
        phase=phase,
        weight=weight,
        shadow_percent=shadow,
    )


def _candidates(router: Router) -> set[str]:
    return {k for k in KEYS if router.route(k).version == "2"}


def test_same_key_same_route_across_router_instances() -> None:
    first, second = Router("1", _state(30, 20)), Router("1", _state(30, 20))
    assert [first.route(k) for k in KEYS[:2000]] == [second.route(k) for k in KEYS[:2000]]
    assert bucket("r1", "u:42") == bucket("r1", "u:42")


def test_route_follows_the_documented_bucket_rule() -> None:
    """The fast path (a keyed hasher copied per key) assigns exactly as ``bucket`` says, so a
    server restarted on a newer release keeps every rider on their version."""
    router = Router("1", _state(30, 20))
    for key in KEYS[:3000]:
        live = bucket("r1", key) < 3000
        shadowed = not live and bucket("r1", key, b"shadow") < 2000
        route = router.route(key)
        assert route.version == ("2" if live else "1"), key
        assert (route.shadow_version == "2") is shadowed, key


def test_a_pickled_router_routes_as_the_original() -> None:
    """Spark ships the router to its executors by pickle."""
    router = Router("1", _state(30, 20))
    copy = pickle.loads(pickle.dumps(router))
    assert [copy.route(k) for k in KEYS[:2000]] == [router.route(k) for k in KEYS[:2000]]


@pytest.mark.parametrize("weight", [1, 20, 50, 90])
def test_weight_shares_hold_over_many_keys(weight: int) -> None:
    share = len(_candidates(Router("1", _state(weight)))) / len(KEYS)
    assert abs(share - weight / 100) < 0.015


def test_raising_the_weight_moves_only_stable_keys_to_the_candidate() -> None:
    at_20 = _candidates(Router("1", _state(20)))
    at_50 = _candidates(Router("1", _state(50)))
    assert at_20 <= at_50  # nobody goes back to stable
    moved = len(at_50 - at_20) / len(KEYS)
    assert abs(moved - 0.30) < 0.015  # only the 30% the weight change asks for


def test_shadow_share_and_arms() -> None:
    router = Router("1", _state(weight=0, shadow=25, strategy="shadow"))
    routes = [router.route(k) for k in KEYS]
    shadowed = sum(r.shadow_version == "2" for r in routes) / len(KEYS)
    assert abs(shadowed - 0.25) < 0.015
    assert all(r.version == "1" and r.arm == "stable" for r in routes)


def test_shadow_copies_come_from_the_stable_arm_only() -> None:
    routes = [Router("1", _state(weight=50, shadow=100)).route(k) for k in KEYS[:4000]]
    assert all(r.shadow_version is None for r in routes if r.version == "2")
    assert all(r.shadow_version == "2" for r in routes if r.version == "1")
    assert {r.arm for r in routes} == {"stable", "canary"}


def test_no_rollout_or_a_finished_one_routes_to_the_given_stable() -> None:
    for router in (
        Router("7"),
        Router("7", _state(50, phase="promoted")),
        Router("7", _state(50, phase="aborted")),
    ):
        assert {router.route(k).version for k in KEYS[:500]} == {"7"}
        assert router.route(None).shadow_version is None


def test_rollouts_are_independent_of_each_other() -> None:
    a = _candidates(Router("1", _state(50, rid="r1")))
    b = _candidates(Router("1", _state(50, rid="r2")))
    overlap = len(a & b) / len(KEYS)
    assert abs(overlap - 0.25) < 0.02  # another rollout id shuffles riders afresh


def test_routing_key_prefers_the_user() -> None:
    assert routing_key("u7", "r9") == "u:u7"
    assert routing_key(None, "r9") == routing_key("", "r9") == "r:r9"
    assert routing_key(None, None) is None
    router = Router("1", _state(50))
    assert router.route_ids(5, 1) == router.route_ids(5, 2)  # sticky per rider


def test_keyless_requests_keep_the_weight_on_average() -> None:
    router = Router("1", _state(40))
    share = sum(router.route(None).version == "2" for _ in range(20_000)) / 20_000
    assert abs(share - 0.40) < 0.02


@pytest.mark.parametrize(
    ("weight", "shadow", "strategy", "worker"),
    [
        (50, 100, "canary", None),
        (20, 0, "canary", None),
        (0, 30, "shadow", None),
        (100, 0, "blue_green", None),
        (7, 93, "canary", None),
        (50, 0, "rolling", 0),
        (50, 0, "rolling", 1),
        (0, 0, "canary", None),
    ],
)
def test_route_many_is_route_for_every_key(
    weight: int, shadow: int, strategy: str, worker: int | None
) -> None:
    """The one vectorized assignment (web list requests, stream batches, batch chunks) gives
    every key exactly what Router.route gives it."""
    state = _state(weight, shadow, strategy=strategy)
    state = state.evolve(memory={"moved": 1}) if strategy == "rolling" else state
    router = Router("1", state, worker)
    keys: list[str | None] = [*KEYS[:3000], *ride_keys([*range(2000), "é", "green/2025-02/7"])]
    split = router.route_many(keys)
    assert sorted([*split.candidate.tolist(), *split.stable.tolist()]) == list(range(len(keys)))
    assert set(split.shadowed.tolist()) <= set(split.stable.tolist())
    for index in (split.candidate, split.stable, split.shadowed):
        assert index.tolist() == sorted(index.tolist())
    candidate, shadowed = set(split.candidate.tolist()), set(split.shadowed.tolist())
    for i, key in enumerate(keys):
        route = router.route(key)
        assert (i in candidate) == (route.version == "2" and route.arm != "stable"), key
        assert (i in shadowed) == (route.shadow_version == "2"), key


def test_route_many_without_keys_holds_the_weights() -> None:
    split = Router("1", _state(30, 50)).route_many([None] * 20_000)
    assert abs(len(split.candidate) / 20_000 - 0.30) < 0.015
    assert abs(len(split.shadowed) / len(split.stable) - 0.50) < 0.02
    assert ride_keys([None, "", 0, "x"]) == [None, None, "r:0", "r:x"]

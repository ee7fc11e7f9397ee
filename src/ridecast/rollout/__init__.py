"""Rolling a new model version out: pure logic, no I/O.

- :mod:`~ridecast.rollout.state` — the state of one rollout (what every process follows);
- :mod:`~ridecast.rollout.router` — which version answers a key, and which one shadows it;
- :mod:`~ridecast.rollout.measurements` — the figures an analysis judges;
- :mod:`~ridecast.rollout.spec` — the rollout file (YAML) and its validation;
- :mod:`~ridecast.rollout.strategies` — canary, blue/green, shadow, A/B and rolling as state
  machines: state and measurements in, decision out;
- :mod:`~ridecast.rollout.stats` — the always-valid confidence sequence of the A/B test.

Storage, leases and the processes that follow a rollout live in :mod:`ridecast.control`.
"""

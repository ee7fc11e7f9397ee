"""Tests of the prediction log, its migrations and the rollout measurements."""

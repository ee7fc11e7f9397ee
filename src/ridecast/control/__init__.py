"""Rollout control: state store, followers, controller (I/O side of ridecast.rollout)."""

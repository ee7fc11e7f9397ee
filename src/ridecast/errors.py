"""Errors meant for people: each says what was wrong, where, and what was expected."""

from __future__ import annotations


class RidecastError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits with status 2."""


class DataError(RidecastError):
    """Input data is missing, unreadable, or lacks the columns a command needs."""


class ModelError(RidecastError):
    """A model cannot be found in the registry, loaded, or used."""


class RolloutError(RidecastError):
    """A rollout file, command or state change is not valid (the message names the field)."""

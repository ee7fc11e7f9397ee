"""The broker interface every stream adapter implements, and the one place URLs pick an adapter.

A broker is an append-only log of entries per stream, read through consumer groups with
at-least-once semantics: an entry read by a consumer stays *pending* until it is acknowledged,
and a pending entry idle for too long can be claimed by another consumer. Redis Streams has
exactly these semantics; a Kafka or Kinesis adapter is one new file implementing
:class:`Broker` plus one line in :func:`open_broker`.

Entries are opaque bytes (``payload``) to the broker. ridecast puts one JSON event in each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ridecast.errors import RidecastError
from ridecast.urls import mask_url


class BrokerUnavailable(RidecastError):
    """The broker cannot be reached right now (connection refused, reset, timed out, loading).

    Consumers treat this as transient: they back off and reconnect; nothing is acknowledged.
    """


class GroupMissing(RidecastError):
    """The consumer group (or its stream) is gone, e.g. after a broker restart without
    persistence. Consumers create it again and carry on."""


@dataclass(frozen=True)
class Message:
    """One entry as delivered to a consumer.

    ``deliveries`` is how many times the entry has been handed out, this time included (1 on a
    first read; higher when it was claimed from a consumer that never acknowledged it).
    ``payload`` is ``None`` when the entry has no payload field (someone else wrote it).
    """

    id: str
    payload: bytes | None
    deliveries: int = 1

    @property
    def produced_ms(self) -> int:
        """When the broker appended the entry (ms since the epoch), from its id."""
        return int(self.id.split("-", 1)[0])


@dataclass(frozen=True)
class Output:
    """One entry to append: ``payload`` plus ``source_id``, the id of the event it answers
    (kept next to the payload so latency and duplicates can be measured without parsing it)."""

    payload: bytes
    source_id: str = ""


@dataclass(frozen=True)
class GroupInfo:
    name: str
    consumers: int
    pending: int
    lag: int | None  # entries not yet delivered to the group (None when the broker cannot tell)
    last_delivered_id: str


@dataclass(frozen=True)
class StreamInfo:
    name: str
    length: int
    last_id: str | None
    groups: list[GroupInfo] = field(default_factory=list)


@runtime_checkable
class Broker(Protocol):
    """What consumers, producers and tools need from a stream broker."""

    url: str

    def ensure_group(
        self, stream: str, group: str, *, start: str = "0", consumer: str | None = None
    ) -> bool:
        """Create ``group`` on ``stream`` (and the stream) if missing; True if it was created.
        ``start="0"`` delivers the whole stream to a new group; ``"$"`` only new entries.
        ``consumer`` joins the group right away (so it shows in status before its first read)."""
        ...

    def publish(
        self, stream: str, payloads: Sequence[bytes | Output], *, maxlen: int | None = None
    ) -> list[str]:
        """Append entries in one round trip; return their ids. ``maxlen`` trims approximately."""
        ...

    def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[Message]:
        """Up to ``count`` never-delivered entries, waiting up to ``block_ms`` for the first.
        Raises :class:`GroupMissing` when the group does not exist."""
        ...

    def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Message]:
        """Take over entries pending (unacknowledged) for at least ``min_idle_ms``, from any
        consumer of the group. Each claim counts as one more delivery."""
        ...

    def complete(
        self,
        stream: str,
        group: str,
        ids: Sequence[str],
        outputs: Mapping[str, Sequence[Output]],
        *,
        maxlen: int | None = None,
    ) -> None:
        """Append ``outputs`` (stream → entries) and acknowledge ``ids``, atomically where the
        broker can: either all outputs are written and the ids acknowledged, or neither."""
        ...

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int: ...

    def read_range(self, stream: str, start: str = "-", count: int = 1000) -> list[Message]:
        """Entries from ``start`` (inclusive) in id order, without any group bookkeeping."""
        ...

    def length(self, stream: str) -> int: ...

    def info(self, streams: Sequence[str]) -> list[StreamInfo]:
        """Length, last id and groups (pending, lag) of each stream that exists."""
        ...

    def delete(self, streams: Sequence[str]) -> None: ...

    def delete_entries(self, stream: str, ids: Sequence[str]) -> int: ...

    def close(self) -> None: ...


def open_broker(url: str) -> Broker:
    """``memory://[name]`` → the in-process broker of that name; ``redis://`` / ``rediss://`` /
    ``unix://`` → Redis Streams."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from ridecast.stream.memory import MemoryBroker

        return MemoryBroker.named(url)
    if scheme in ("redis", "rediss", "unix"):
        from ridecast.stream.redis_streams import RedisStreamBroker

        return RedisStreamBroker(url)
    raise RidecastError(
        f"broker URL {mask_url(url)!r} is not supported; expected memory:// (in-process) or "
        "redis://HOST:PORT/DB (set --broker, RIDECAST_BROKER_URL or REDIS_URL)"
    )

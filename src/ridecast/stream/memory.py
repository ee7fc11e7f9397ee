"""``memory://``: an in-process broker with the same semantics as Redis Streams consumer groups.

Used by the demo and unit tests, and by anything that wants streaming without a server. Entries
live in this process only: a producer and its consumers must share the process (threads are
fine; every method is thread-safe and ``read`` blocks like XREADGROUP BLOCK).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ridecast.stream.broker import GroupInfo, GroupMissing, Message, Output, StreamInfo


@dataclass
class _Pending:
    consumer: str
    delivered_ms: float
    deliveries: int


@dataclass
class _Group:
    last_delivered: tuple[int, int]
    consumers: set[str] = field(default_factory=set)
    pending: dict[str, _Pending] = field(default_factory=dict)


@dataclass
class _Stream:
    ids: list[tuple[int, int]] = field(default_factory=list)
    entries: dict[tuple[int, int], Output] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    last_id: tuple[int, int] = (0, 0)


def _parse_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _fmt(entry_id: tuple[int, int]) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


class MemoryBroker:
    """A thread-safe in-memory stream broker. ``MemoryBroker.named(url)`` shares one instance per
    URL within the process, so a producer and a consumer given ``memory://`` meet."""

    _instances: ClassVar[dict[str, MemoryBroker]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._streams: dict[str, _Stream] = {}
        self._cond = threading.Condition()

    @classmethod
    def named(cls, url: str) -> MemoryBroker:
        with cls._instances_lock:
            broker = cls._instances.get(url)
            if broker is None:
                broker = cls._instances[url] = cls(url)
            return broker

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    def ensure_group(
        self, stream: str, group: str, *, start: str = "0", consumer: str | None = None
    ) -> bool:
        with self._cond:
            s = self._stream(stream)
            created = group not in s.groups
            if created:
                s.groups[group] = _Group(s.last_id if start == "$" else _parse_id(start))
            if consumer is not None:
                s.groups[group].consumers.add(consumer)
            return created

    def _append(self, s: _Stream, item: Output) -> str:
        ms = int(time.time() * 1000)
        new_id = (ms, 0) if ms > s.last_id[0] else (s.last_id[0], s.last_id[1] + 1)
        s.last_id = new_id
        s.ids.append(new_id)
        s.entries[new_id] = item
        return _fmt(new_id)

    def _trim(self, s: _Stream, maxlen: int | None) -> None:
        if maxlen is not None and len(s.ids) > maxlen:
            for old in s.ids[: len(s.ids) - maxlen]:
                s.entries.pop(old, None)
            del s.ids[: len(s.ids) - maxlen]

    def publish(
        self, stream: str, payloads: Sequence[bytes | Output], *, maxlen: int | None = None
    ) -> list[str]:
        with self._cond:
            s = self._stream(stream)
            ids = [self._append(s, p if isinstance(p, Output) else Output(p)) for p in payloads]
            self._trim(s, maxlen)
            self._cond.notify_all()
            return ids

    def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[Message]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            while True:
                s = self._stream(stream)
                g = s.groups.get(group)
                if g is None:
                    raise GroupMissing(f"no group {group!r} on stream {stream!r}")
                g.consumers.add(consumer)
                start = bisect.bisect_right(s.ids, g.last_delivered)
                taken = s.ids[start : start + count]
                if taken:
                    now = time.monotonic() * 1000
                    g.last_delivered = taken[-1]
                    out = []
                    for entry_id in taken:
                        g.pending[_fmt(entry_id)] = _Pending(consumer, now, 1)
                        out.append(Message(_fmt(entry_id), s.entries[entry_id].payload, 1))
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Message]:
        with self._cond:
            s = self._stream(stream)
            g = s.groups.get(group)
            if g is None:
                return []
            now = time.monotonic() * 1000
            out: list[Message] = []
            for entry_key in sorted(g.pending, key=_parse_id):
                p = g.pending[entry_key]
                if now - p.delivered_ms < min_idle_ms:
                    continue
                entry = s.entries.get(_parse_id(entry_key))
                if entry is None:  # trimmed away while pending: nothing left to deliver
                    del g.pending[entry_key]
                    continue
                p.consumer, p.delivered_ms, p.deliveries = consumer, now, p.deliveries + 1
                g.consumers.add(consumer)
                out.append(Message(entry_key, entry.payload, p.deliveries))
                if len(out) >= count:
                    break
            return out

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        with self._cond:
            g = self._stream(stream).groups.get(group)
            if g is None:
                return 0
            return sum(1 for i in ids if g.pending.pop(i, None) is not None)

    def complete(
        self,
        stream: str,
        group: str,
        ids: Sequence[str],
        outputs: Mapping[str, Sequence[Output]],
        *,
        maxlen: int | None = None,
    ) -> None:
        with self._cond:  # one lock: outputs and acknowledgements land together
            for name, items in outputs.items():
                if items:
                    self.publish(name, items, maxlen=maxlen)
            self.ack(stream, group, ids)

    def read_range(self, stream: str, start: str = "-", count: int = 1000) -> list[Message]:
        with self._cond:
            s = self._streams.get(stream)
            if s is None:
                return []
            begin = 0 if start == "-" else bisect.bisect_left(s.ids, _parse_id(start))
            return [Message(_fmt(i), s.entries[i].payload, 0) for i in s.ids[begin : begin + count]]

    def source_ids(self, stream: str) -> list[str]:
        """The ``source_id`` of each entry (what Redis keeps in the entry's ``source`` field)."""
        with self._cond:
            s = self._streams.get(stream)
            return [] if s is None else [s.entries[i].source_id for i in s.ids]

    def length(self, stream: str) -> int:
        with self._cond:
            s = self._streams.get(stream)
            return 0 if s is None else len(s.ids)

    def info(self, streams: Sequence[str]) -> list[StreamInfo]:
        with self._cond:
            out = []
            for name in streams:
                s = self._streams.get(name)
                if s is None:
                    continue
                groups = [
                    GroupInfo(
                        gname,
                        len(g.consumers),
                        len(g.pending),
                        len(s.ids) - bisect.bisect_right(s.ids, g.last_delivered),
                        _fmt(g.last_delivered),
                    )
                    for gname, g in s.groups.items()
                ]
                last = _fmt(s.ids[-1]) if s.ids else None
                out.append(StreamInfo(name, len(s.ids), last, groups))
            return out

    def delete(self, streams: Sequence[str]) -> None:
        with self._cond:
            for name in streams:
                self._streams.pop(name, None)

    def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        with self._cond:
            s = self._streams.get(stream)
            if s is None:
                return 0
            gone = {_parse_id(i) for i in ids} & set(s.entries)
            for entry_id in gone:
                del s.entries[entry_id]
            s.ids = [i for i in s.ids if i not in gone]
            return len(gone)

    def close(self) -> None:
        """Nothing to release: the named instance lives as long as the process."""

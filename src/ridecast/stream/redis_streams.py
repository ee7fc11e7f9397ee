"""Redis Streams adapter: consumer groups, pending entries, claims, one round trip per batch.

Each entry has two fields: ``data`` (the event or output, JSON bytes) and, on outputs, ``source``
(the id of the event it answers). Outputs are written and their events acknowledged in one
MULTI/EXEC transaction, so a consumer killed at any moment leaves either both or neither.

Connection failures surface as :class:`BrokerUnavailable`; redis-py's own command retries are
switched off so that the caller, which knows what is safe to repeat, decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ridecast.stream.broker import (
    BrokerUnavailable,
    GroupInfo,
    GroupMissing,
    Message,
    Output,
    StreamInfo,
)
from ridecast.urls import mask_url

DATA = b"data"
SOURCE = b"source"
# KEYS: the input stream, then each output stream. ARGV: group, maxlen (0: keep all), the number
# of output streams; per output stream: payload byte lengths joined by ",", the payloads
# concatenated, the source ids joined by ","; last, the event ids to acknowledge joined by ",".
# Packing keeps a 500-event batch at a handful of arguments. Runs atomically: outputs and
# acknowledgements land together or not at all.
COMPLETE_SCRIPT = """
local function split(text)
  local items = {}
  for item in string.gmatch(text, '[^,]+') do items[#items + 1] = item end
  return items
end
local group, maxlen, streams = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for s = 1, streams do
  local key, lengths = KEYS[s + 1], split(ARGV[3 * s + 1])
  local blob, sources = ARGV[3 * s + 2], split(ARGV[3 * s + 3])
  local at = 1
  for i = 1, #lengths do
    local n = tonumber(lengths[i])
    redis.call('XADD', key, '*', 'data', string.sub(blob, at, at + n - 1), 'source', sources[i])
    at = at + n
  end
  if maxlen > 0 then redis.call('XTRIM', key, 'MAXLEN', '~', maxlen) end
end
local ids, acked = split(ARGV[3 * streams + 4]), 0
for first = 1, #ids, 1000 do
  local last = math.min(first + 999, #ids)
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ids, first, last))
end
return acked
"""
# XREADGROUP without blocking, answered as (ids joined by ",", payload lengths joined by ",",
# payloads concatenated): three strings instead of five reply elements per entry.
READ_SCRIPT = """
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
if not reply then return {'', '', ''} end
local ids, lengths, data = {}, {}, {}
for i, entry in ipairs(reply[1][2]) do
  ids[i] = entry[1]
  local fields, payload = entry[2], nil
  for j = 1, #fields, 2 do
    if fields[j] == 'data' then payload = fields[j + 1] break end
  end
  if payload then
    lengths[i] = #payload
    data[#data + 1] = payload
  else
    lengths[i] = -1
  end
end
return {table.concat(ids, ','), table.concat(lengths, ','), table.concat(data)}
"""
_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    ConnectionError,
    OSError,
)


# Replies that mean "this server cannot take the command now" rather than "the command is wrong":
# a replica during a failover (READONLY), a server still loading or without its master.
_UNAVAILABLE_REPLIES = (
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamBroker:
    """:class:`ridecast.stream.broker.Broker` over Redis Streams (Redis ≥ 6.2; 7 shows lag)."""

    def __init__(self, url: str, *, socket_timeout: float = 10.0) -> None:
        self.url = url
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._complete = self.client.register_script(COMPLETE_SCRIPT)
        self._read_packed = self.client.register_script(READ_SCRIPT)

    def __repr__(self) -> str:
        return f"RedisStreamBroker({mask_url(self.url)!r})"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _TRANSIENT as exc:
            raise BrokerUnavailable(
                f"Redis at {mask_url(self.url)} is unavailable during {what}: {exc}"
            ) from exc
        except redis.ResponseError as exc:
            if isinstance(exc, redis.ReadOnlyError) or str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise BrokerUnavailable(
                    f"Redis at {mask_url(self.url)} refuses {what} for now: {exc}"
                ) from exc
            raise

    def ensure_group(
        self, stream: str, group: str, *, start: str = "0", consumer: str | None = None
    ) -> bool:
        try:
            self._call(
                "XGROUP CREATE", self.client.xgroup_create, stream, group, id=start, mkstream=True
            )
            created = True
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            created = False
        if consumer is not None:
            self._call(
                "XGROUP CREATECONSUMER",
                self.client.xgroup_createconsumer,
                stream,
                group,
                consumer,
            )
        return created

    def publish(
        self, stream: str, payloads: Sequence[bytes | Output], *, maxlen: int | None = None
    ) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for p in payloads:
            if isinstance(p, Output):
                fields = (
                    {DATA: p.payload, SOURCE: p.source_id} if p.source_id else {DATA: p.payload}
                )
            else:
                fields = {DATA: p}
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        if maxlen is not None:
            pipe.xtrim(stream, maxlen=maxlen, approximate=True)
        replies = self._call("XADD", pipe.execute)
        return [_text(r) for r in replies[: len(payloads)]]

    @staticmethod
    def _messages(entries: Any, deliveries: dict[str, int] | None = None) -> list[Message]:
        out = []
        for entry_id, fields in entries or ():
            if fields is None:  # deleted while pending
                continue
            key = _text(entry_id)
            out.append(Message(key, fields.get(DATA), deliveries.get(key, 1) if deliveries else 1))
        return out

    def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[Message]:
        try:
            # Whatever is already waiting comes back packed in three strings (cheap to parse);
            # only when nothing is waiting does a plain XREADGROUP block for the next event.
            packed = self._call(
                "XREADGROUP", self._read_packed, keys=[stream], args=[group, consumer, count]
            )
            messages = self._unpack(packed)
            if messages or block_ms <= 0:
                return messages
            reply = self._call(
                "XREADGROUP",
                self.client.xreadgroup,
                group,
                consumer,
                {stream: ">"},
                count=count,
                block=block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise GroupMissing(f"no group {group!r} on stream {stream!r}") from exc
            raise
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            entries = next(iter(reply.values()))
            if entries and isinstance(entries[0], list) and len(entries) == 1:
                entries = entries[0]
            return self._messages(entries)
        return self._messages(reply[0][1])

    @staticmethod
    def _unpack(packed: Any) -> list[Message]:
        ids_blob, lengths_blob, data = packed
        if not ids_blob:
            return []
        ids = _text(ids_blob).split(",")
        lengths = [int(n) for n in _text(lengths_blob).split(",")]
        out = []
        at = 0
        for entry_id, n in zip(ids, lengths, strict=True):
            if n < 0:
                out.append(Message(entry_id, None))
                continue
            out.append(Message(entry_id, data[at : at + n]))
            at += n
        return out

    def claim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Message]:
        try:
            pending = self._call(
                "XPENDING",
                self.client.xpending_range,
                stream,
                group,
                "-",
                "+",
                count,
                idle=min_idle_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        if not pending:
            return []
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
        claimed = self._call(
            "XCLAIM",
            self.client.xclaim,
            stream,
            group,
            consumer,
            min_idle_ms,
            list(deliveries),
        )
        got = self._messages(claimed, deliveries)
        # Entries trimmed away while pending can never be delivered again: drop them from the PEL.
        vanished = set(deliveries) - {m.id for m in got}
        if vanished:
            self.ack(stream, group, sorted(vanished))
        return got

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(self._call("XACK", self.client.xack, stream, group, *ids))

    def complete(
        self,
        stream: str,
        group: str,
        ids: Sequence[str],
        outputs: Mapping[str, Sequence[Output]],
        *,
        maxlen: int | None = None,
    ) -> None:
        names = [name for name, items in outputs.items() if items]
        args: list[Any] = [group, maxlen or 0, len(names)]
        for name in names:
            items = outputs[name]
            args.append(",".join([str(len(item.payload)) for item in items]))
            args.append(b"".join([item.payload for item in items]))
            args.append(",".join([item.source_id or "-" for item in items]))
        args.append(",".join(ids))
        # One script call: atomic like MULTI/EXEC, but one command and one reply for the batch.
        self._call("EVALSHA complete", self._complete, keys=[stream, *names], args=args)

    def read_range(self, stream: str, start: str = "-", count: int = 1000) -> list[Message]:
        entries = self._call("XRANGE", self.client.xrange, stream, start, "+", count=count)
        return [Message(_text(i), f.get(DATA), 0) for i, f in entries]

    def source_ids(self, stream: str, start: str = "-", count: int = 10_000) -> list[str]:
        entries = self._call("XRANGE", self.client.xrange, stream, start, "+", count=count)
        return [_text(f.get(SOURCE, b"")) for _, f in entries]

    def length(self, stream: str) -> int:
        return int(self._call("XLEN", self.client.xlen, stream))

    def info(self, streams: Sequence[str]) -> list[StreamInfo]:
        out = []
        for name in streams:
            try:
                s = self._call("XINFO STREAM", self.client.xinfo_stream, name)
            except redis.ResponseError:
                continue  # no such stream
            groups = []
            for g in self._call("XINFO GROUPS", self.client.xinfo_groups, name):
                lag = g.get("lag")
                groups.append(
                    GroupInfo(
                        _text(g["name"]),
                        int(g["consumers"]),
                        int(g["pending"]),
                        int(lag) if lag is not None else None,
                        _text(g["last-delivered-id"]),
                    )
                )
            last = s.get("last-generated-id")
            out.append(StreamInfo(name, int(s["length"]), _text(last) if last else None, groups))
        return out

    def delete(self, streams: Sequence[str]) -> None:
        if streams:
            self._call("DEL", self.client.delete, *streams)

    def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(self._call("XDEL", self.client.xdel, stream, *ids))

    def close(self) -> None:
        self.client.close()

"""URLs safe to print: passwords in the user part and in the query are masked, by the one
function every message, log line and health answer uses."""

from __future__ import annotations

import pytest

from ridecast.batch.sources import SqlSource
from ridecast.batch.sql_sink import SqlSink
from ridecast.data.readers import iter_trip_batches
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError, RidecastError
from ridecast.monitoring import mask_url as monitoring_mask_url
from ridecast.stream.broker import open_broker
from ridecast.stream.redis_streams import RedisStreamBroker
from ridecast.urls import mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://app:s3cret@db:5432/ridecast",
            "postgresql+psycopg://app:***@db:5432/ridecast",
        ),
        (
            "postgresql+psycopg://app@db/ridecast?password=s3cret&sslmode=require",
            "postgresql+psycopg://app@db/ridecast?password=***&sslmode=require",
        ),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://redis:6379/0?Password=s3cret&db=1", "redis://redis:6379/0?Password=***&db=1"),
        # A password that holds "@", "/" or "?" (SQLAlchemy reads it up to the last "@").
        ("postgresql://app:s@c/r?e@db/ridecast", "postgresql://app:***@db/ridecast"),
        ("https://mlflow:5000/?token=abc&x=1#top", "https://mlflow:5000/?token=***&x=1#top"),
        (
            "postgresql://db/ridecast?sslkey=/k&sslpassword=p",
            "postgresql://db/ridecast?sslkey=***&sslpassword=***",
        ),
        # Nothing to hide: unchanged.
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:////var/lib/ridecast/a@b.db", "sqlite:////var/lib/ridecast/a@b.db"),
        ("postgresql://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"),
        ("/data/tlc", "/data/tlc"),
        # Not a URL SQLAlchemy can parse (a typo): still masked.
        ("postgres:/app:s3cret@db/ridecast", "postgres:***@db/ridecast"),
    ],
)
def test_passwords_are_masked_wherever_the_url_holds_them(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_every_mode_shows_urls_through_the_one_function() -> None:
    """Before: the batch, data and stream modes each masked in their own way, and every one of
    them (SQLAlchemy's hide_password, the Redis adapter's own) left ``?password=`` visible."""
    pg = "postgresql+psycopg://app:user-s3cret@127.0.0.1:1/ridecast?password=query-s3cret"
    redis_url = "redis://:user-s3cret@127.0.0.1:1/0?password=query-s3cret"
    shown = [
        monitoring_mask_url(pg),
        str(SqlSource(pg, "trips", TaxiType.GREEN, Month(2025, 2))),
        SqlSink(pg, table="scores", rejects_table="rejects").shown,
        repr(RedisStreamBroker(redis_url)),
    ]
    for bad in ("postgres:/app:user-s3cret@db?password=query-s3cret",):
        with pytest.raises(DataError) as refused:
            SqlSink(bad, table="scores", rejects_table="rejects")
        shown.append(str(refused.value))
    with pytest.raises(DataError) as unreadable:  # nothing listens on port 1
        next(iter(iter_trip_batches(pg, TaxiType.GREEN, Month(2025, 2), table="trips")))
    shown.append(str(unreadable.value))
    with pytest.raises(RidecastError) as unsupported:
        open_broker("kafka://app:user-s3cret@broker:9092?password=query-s3cret")
    shown.append(str(unsupported.value))
    for text in shown:
        assert "s3cret" not in text and "***" in text, text

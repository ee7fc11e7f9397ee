"""URLs safe to print: every database, broker and registry URL a message shows goes through
:func:`mask_url`.

A URL carries secrets in two places: the user part (``postgresql://app:SECRET@db/ridecast``,
``redis://:SECRET@redis:6379/0``) and the query (``postgresql://app@db/ridecast?password=SECRET``,
``redis://redis:6379/0?password=SECRET``); libpq, psycopg and redis-py accept both. Both become
``***``; the rest stays as written, so the reader still sees which server, user and database.
"""

from __future__ import annotations

import re

# A query key is secret when its name contains one of these words, or is one of the libpq keys
# that name key material.
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "credential")
_SECRET_KEYS = frozenset({"passfile", "sslkey", "sslpassword"})
_USER = re.compile(r"[^:/@?#]*:")
MASK = "***"


def mask_url(url: object) -> str:
    """``url`` (a string or a SQLAlchemy URL) with its password and secret query values masked.

    The password runs from the ``:`` after the user name to the last ``@`` of the URL, as
    SQLAlchemy reads it (a password may hold ``/`` or ``?``); a URL with an ``@`` in its query
    therefore loses more than its password, never less.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    user = _USER.match(rest)
    at = rest.rfind("@")
    if user is not None and at >= user.end():
        rest = f"{rest[: user.end()]}{MASK}{rest[at:]}"
    # The user name holds no "?" and the password is gone: the first "?" starts the query.
    head, question, query = rest.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        query = "&".join(_mask_pair(pair) for pair in query.split("&")) + hash_ + fragment
    return f"{scheme}{sep}{head}{question}{query}"


def _mask_pair(pair: str) -> str:
    key, equals, _ = pair.partition("=")
    name = key.strip().lower()
    if equals and (name in _SECRET_KEYS or any(word in name for word in _SECRET_WORDS)):
        return f"{key}={MASK}"
    return pair

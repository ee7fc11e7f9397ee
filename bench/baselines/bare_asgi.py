"""The ceiling: a bare ASGI app that reads and parses the body and answers constant JSON.

No model, no validation, no framework: what uvicorn (uvloop + httptools) itself can do here::

    uvicorn --workers 2 --loop uvloop --http httptools --no-access-log \
        --app-dir bench/baselines bare_asgi:app
"""

from __future__ import annotations

from typing import Any

import orjson

ANSWER = orjson.dumps({"duration": 12.5, "model_version": "1"})
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if body:
        orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})

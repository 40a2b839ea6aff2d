"""Keep trigger refusals of this project's DAGs short and bounded (an ASGI middleware).

Airflow validates a run's conf against the DAG's params when the run is triggered and answers
400 with the JSON Schema error. That error quotes the whole offending value: a 200,000-item
``tables`` list gave a 3.4 MB answer. For the DAGs of this project (ids starting ``mysql_``)
this middleware:

- refuses a trigger request whose body is larger than ``max_body`` (default 1 MiB) with a 400
  saying so, before Airflow parses it: no conf that large is meant;
- cuts the ``detail`` of a 400/422 answer to a readable size: the first paragraph of the
  schema error (which names the param and the rule) with the quoted value cut in the middle.

A pattern that failed is shown as its hint (``mysqlbackup.params.HINTS``), not as a regex.

Pure ASGI, no Airflow import: it is unit-tested without a server and runs in the api-server
through the plugin's ``fastapi_root_middlewares``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

from mysqlbackup.params import hint_for

# POST /api/v2/dags/{dag_id}/dagRuns, for this project's DAGs only
TRIGGER_PATH = re.compile(r"^/api/v2/dags/(mysql_[A-Za-z0-9_.-]*)/dagRuns/?$")
MAX_BODY = 1 << 20
DETAIL_LIMIT = 2000

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def shorten(detail: str, limit: int = DETAIL_LIMIT) -> str:
    """A refusal cut to about ``limit`` characters, keeping its start and its end.

    jsonschema's text is ``<message>\\n\\nFailed validating ... On instance: <the value again>``:
    the message alone says which param broke which rule; a long quoted value in it is cut in
    the middle so that both the param's name and the rule ("is too long") stay.
    """
    text = hint_for(detail.split("\n\nFailed validating", 1)[0].strip())
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 4):]
    return f"{head} ... [{len(text) - len(head) - len(tail):,} characters cut] ... {tail}"


def shorten_body(body: bytes, limit: int = DETAIL_LIMIT) -> bytes:
    """A JSON error body with its ``detail`` shortened (a list of details: each, and at most 10)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body if len(body) <= limit else json.dumps({"detail": shorten(body.decode("utf-8", "replace"),
                                                                              limit)}).encode()
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        doc["detail"] = shorten(doc["detail"], limit)
    elif isinstance(doc, dict) and isinstance(doc.get("detail"), list):
        items = doc["detail"]
        kept = [_short_item(d, limit // 4) for d in items[:10]]
        if len(items) > 10:
            kept.append(f"and {len(items) - 10:,} more")
        doc["detail"] = kept
    out = json.dumps(doc).encode()
    return out if len(out) <= 4 * limit else json.dumps({"detail": shorten(json.dumps(doc), limit)}).encode()


def _short_item(item: Any, limit: int) -> Any:
    if isinstance(item, dict):
        return {k: (shorten(v, limit) if isinstance(v, str) else
                    shorten(json.dumps(v), limit) if k == "input" else v) for k, v in item.items()}
    return shorten(str(item), limit)


def _refusal(dag_id: str, size: int | None, max_body: int) -> bytes:
    got = f"{size:,} bytes" if size is not None else "more than that"
    return json.dumps({"detail": f"the trigger request of {dag_id} is {got}; at most {max_body:,} bytes are "
                                 "accepted: check the conf (a list param holds at most a few hundred items)"}).encode()


class TriggerGuard:
    """The ASGI middleware: bounded trigger bodies and short refusals for ``mysql_*`` DAGs."""

    def __init__(self, app: Callable, max_body: int = MAX_BODY, detail_limit: int = DETAIL_LIMIT) -> None:
        self.app = app
        self.max_body = max_body
        self.detail_limit = detail_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = TRIGGER_PATH.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if m is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        dag_id = m.group(1)
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _answer(send, 400, _refusal(dag_id, length, self.max_body))
            return
        # read the body (bounded), then hand it on unchanged
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await _answer(send, 400, _refusal(dag_id, None, self.max_body))
                return
            if not message.get("more_body"):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      receive), self._shortening(send))

    def _shortening(self, send: Send) -> Send:
        held: dict = {}
        parts: list[bytes] = []

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message.get("status") in (400, 422):
                    held["start"] = message
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in held:
                parts.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = shorten_body(b"".join(parts), self.detail_limit)
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        return wrapped


def _content_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers", []):
        if k.lower() == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})

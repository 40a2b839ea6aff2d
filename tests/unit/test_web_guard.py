"""The api-server middleware that keeps trigger refusals of mysql_* DAGs short and bounded."""
from __future__ import annotations

import asyncio
import json

from web.guard import TriggerGuard, shorten, shorten_body


def test_shorten_keeps_the_param_and_the_rule():
    value = repr(["t"] * 200_000)
    detail = (f"Invalid input for param tables: {value} is too long\n\nFailed validating 'maxItems' in schema:\n"
              f"    {{'maxItems': 500}}\n\nOn instance:\n    {value}")
    short = shorten(detail)
    assert len(short) < 2200
    assert short.startswith("Invalid input for param tables: ['t', ") and short.endswith("] is too long")
    assert "characters cut" in short
    assert shorten("Invalid input for param x: 'a' does not match '^b$'\n\nFailed validating ...") == \
        "Invalid input for param x: 'a' does not match '^b$'"


def test_shorten_body_handles_lists_and_non_json():
    body = json.dumps({"detail": [{"loc": ["body", "conf"], "msg": "bad", "input": ["x"] * 100_000}] * 50}).encode()
    out = json.loads(shorten_body(body))
    assert len(out["detail"]) == 11 and out["detail"][-1] == "and 40 more"
    assert len(json.dumps(out)) < 10_000
    assert len(shorten_body(b"x" * 100_000)) < 3000


def _call(app, path: str, body: bytes, method: str = "POST", chunked: bool = False):
    """Run one request through the ASGI app; returns (status, body, what the app received)."""
    headers = [] if chunked else [(b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(TriggerGuard(app)(scope, receive, send))
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


def _echo_app(status: int, detail: str):
    seen: dict = {}

    async def app(scope, receive, send):
        chunks = []
        while True:
            m = await receive()
            chunks.append(m.get("body", b""))
            if not m.get("more_body"):
                break
        seen["body"] = b"".join(chunks)
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app, seen


def test_a_long_refusal_of_a_mysql_dag_is_cut_and_the_body_reaches_the_app_unchanged():
    app, seen = _echo_app(400, "Invalid input for param tables: " + "x" * 500_000 + " is too long")
    conf = json.dumps({"conf": {"tables": ["a"] * 1000}}).encode()
    status, body = _call(app, "/api/v2/dags/mysql_flashback/dagRuns", conf)
    assert status == 400 and len(body) < 3000 and b"is too long" in body
    assert seen["body"] == conf


def test_other_dags_and_successes_pass_untouched():
    long = "y" * 50_000
    app, _ = _echo_app(400, long)
    status, body = _call(app, "/api/v2/dags/someone_elses/dagRuns", b"{}")
    assert json.loads(body)["detail"] == long
    app, _ = _echo_app(200, long)
    status, body = _call(app, "/api/v2/dags/mysql_flashback/dagRuns", b"{}")
    assert status == 200 and json.loads(body)["detail"] == long


def test_an_oversized_trigger_is_refused_before_the_app_reads_it():
    app, seen = _echo_app(200, "created")
    big = json.dumps({"conf": {"tables": ["t" * 20] * 60_000}}).encode()
    for chunked in (False, True):
        status, body = _call(app, "/api/v2/dags/mysql_flashback/dagRuns", big, chunked=chunked)
        assert status == 400 and b"at most 1,048,576 bytes" in body
    assert "body" not in seen

"""Tests for mysqlbackup.alerts against a real local SMTP server and a real HTTP server."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from receivers import BoundController, Hook, Inbox
from mysqlbackup.alerts import (
    ERROR_LIMIT,
    Alert,
    AlertDeliveryError,
    EmailNotifier,
    WebhookNotifier,
    redact_url,
    send_all,
)

TOKEN = "tok-9f8e7d6c5b4a"
SMTP_PASSWORD = "pw-Zq81-secret"


def make_alert(**overrides: Any) -> Alert:
    """A typical alert."""
    data: dict[str, Any] = dict(
        instance="shop_main", dag_id="mysql_backup__shop_main", task_id="backup",
        run_id="scheduled__2024-03-15T02:00:00+00:00", try_number=2,
        error="storage.py receive exited 3: not enough space on /srv (need 12 GiB, free 3 GiB)",
        log_url="http://airflow.example/log?dag_id=mysql_backup__shop_main", owner="dba-team@example.com",
        app="shop", when="2024-03-15T02:11:00Z",
    )
    data.update(overrides)
    return Alert(**data)


# --- the message -----------------------------------------------------------------------------

def test_subject() -> None:
    assert make_alert().subject() == "[mysql-backup] FAILED shop_main backup (try 2)"
    assert "\n" not in make_alert(task_id="x\r\nBcc: evil@example.com").subject()


def test_text_has_every_field() -> None:
    alert = make_alert()
    text = alert.text()
    for value in ("shop_main", "mysql_backup__shop_main", "backup", alert.run_id, "2",
                  alert.error, alert.log_url, "dba-team@example.com", "shop", "2024-03-15T02:11:00Z"):
        assert value in text  # type: ignore[operator]
    assert "(no log URL)" in make_alert(log_url=None).text()


def test_text_truncates_long_errors() -> None:
    error = "A" * ERROR_LIMIT + "B" * 500
    text = make_alert(error=error).text()
    assert "A" * ERROR_LIMIT in text
    assert "B" not in text.replace("truncated", "")
    assert "500 more characters" in text
    assert ERROR_LIMIT == 4000


# --- a real SMTP server --------------------------------------------------------------------------

def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = BoundController(inbox, authenticator=_authenticator, auth_require_tls=False)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def test_email_arrives(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    notifier = EmailNotifier("127.0.0.1", controller.port, "backup@localhost",
                             ["dba@example.com", "oncall@example.com"], timeout=10)
    alert = make_alert()
    notifier.send(alert)
    assert inbox.received.wait(10)
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "backup@localhost"
    assert envelope.rcpt_tos == ["dba@example.com", "oncall@example.com"]
    msg = inbox.message()
    assert msg["Subject"] == "[mysql-backup] FAILED shop_main backup (try 2)"
    assert msg["From"] == "backup@localhost"
    body = msg.get_payload(decode=True).decode()
    assert alert.error in body
    assert alert.run_id in body


def test_email_with_login(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    EmailNotifier("127.0.0.1", controller.port, "backup@localhost", ["dba@example.com"],
                  username="alerts", password=SMTP_PASSWORD, timeout=10).send(make_alert())
    assert inbox.received.wait(10)


def test_email_bad_password_is_not_in_the_error(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    notifier = EmailNotifier("127.0.0.1", controller.port, "backup@localhost", ["dba@example.com"],
                             username="alerts", password="wrong-" + SMTP_PASSWORD, timeout=10)
    with pytest.raises(AlertDeliveryError) as info:
        notifier.send(make_alert())
    assert "login" in str(info.value)
    assert SMTP_PASSWORD not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert SMTP_PASSWORD not in repr(notifier)
    assert inbox.envelopes == []


def test_email_unreachable() -> None:
    port = _closed_port()
    notifier = EmailNotifier("127.0.0.1", port, "backup@localhost", ["dba@example.com"], timeout=5)
    with pytest.raises(AlertDeliveryError, match=f"127.0.0.1:{port} unreachable"):
        notifier.send(make_alert())


def test_email_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="recipient"):
        EmailNotifier("h", 25, "a@b", [])
    with pytest.raises(ValueError, match="starttls"):
        EmailNotifier("h", 25, "a@b", ["c@d"], starttls=True, ssl=True)


# --- a real HTTP server --------------------------------------------------------------------------

@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    h.thread.start()
    try:
        yield h
    finally:
        h.server.shutdown()
        h.server.server_close()
        h.thread.join(10)


def test_webhook_posts_json(hook: Hook) -> None:
    alert = make_alert()
    WebhookNotifier(hook.url(f"/hook?token={TOKEN}"), headers={"X-Team": "dba"}).send(alert)
    [req] = hook.requests
    assert req["path"] == f"/hook?token={TOKEN}"
    assert req["headers"]["Content-Type"].startswith("application/json")
    assert req["headers"]["X-Team"] == "dba"
    payload = json.loads(req["body"])
    assert payload == {
        "instance": "shop_main", "dag_id": "mysql_backup__shop_main", "task_id": "backup",
        "run_id": alert.run_id, "try_number": 2, "error": alert.error, "log_url": alert.log_url,
        "owner": "dba-team@example.com", "app": "shop", "when": "2024-03-15T02:11:00Z",
        "text": alert.text(), "event": "FAILED", "what": "",
    }


def test_an_incident_alert_says_what_was_found() -> None:
    import dataclasses
    alert = dataclasses.replace(make_alert(), event="MISSING", what="backup 20240315-020000F", task_id="reserve_space",
                                error="backup 20240315-020000F of shop_main was catalogued as usable and is now missing")
    assert alert.subject() == "[mysql-backup] MISSING shop_main backup 20240315-020000F"
    assert alert.text().startswith("MISSING: backup 20240315-020000F of instance shop_main (found by task reserve_space)")
    assert "now missing" in alert.text()


def test_webhook_userinfo_becomes_basic_auth(hook: Hook) -> None:
    url = f"http://bot:{TOKEN}@127.0.0.1:{hook.port}/hook"
    notifier = WebhookNotifier(url)
    notifier.send(make_alert())
    [req] = hook.requests
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(f"bot:{TOKEN}".encode()).decode()
    assert TOKEN not in repr(notifier)


def test_webhook_500_is_a_delivery_error_without_token(hook: Hook) -> None:
    url = f"http://bot:{TOKEN}@127.0.0.1:{hook.port}/fail/x?token={TOKEN}&team=dba#frag"
    with pytest.raises(AlertDeliveryError) as info:
        WebhookNotifier(url).send(make_alert())
    message = str(info.value)
    assert "500" in message
    assert f"http://127.0.0.1:{hook.port}/fail/..." in message
    assert TOKEN not in message
    assert "bot" not in message and "team=dba" not in message
    assert len(hook.requests) == 1


def test_webhook_unreachable_is_a_delivery_error() -> None:
    port = _closed_port()
    with pytest.raises(AlertDeliveryError, match="unreachable") as info:
        WebhookNotifier(f"http://127.0.0.1:{port}/hook?token={TOKEN}", timeout=5).send(make_alert())
    assert TOKEN not in str(info.value)


def test_webhook_timeout_is_a_delivery_error() -> None:
    # A listening socket that never answers: the request times out.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook?token={TOKEN}"
        with pytest.raises(AlertDeliveryError) as info:
            WebhookNotifier(url, timeout=0.5).send(make_alert())
    assert TOKEN not in str(info.value)


def test_webhook_url_is_checked() -> None:
    with pytest.raises(ValueError, match="http") as info:
        WebhookNotifier(f"ftp://host/x?token={TOKEN}")
    assert TOKEN not in str(info.value)


def test_redact_url() -> None:
    assert redact_url(f"https://u:{TOKEN}@hooks.example:8443/a/b?token={TOKEN}#x") == "https://hooks.example:8443/a/..."
    assert TOKEN not in redact_url(f"https://hooks.slack.example/services/T0/B0/{TOKEN}")
    assert redact_url("http://[::1]:8080/x?y=1") == "http://[::1]:8080/x"


# --- send_all ------------------------------------------------------------------------------------

class Exploding:
    """A notifier whose bug must not stop the others."""

    def send(self, alert: Alert) -> None:
        raise RuntimeError("notifier bug")


def test_send_all_continues_past_failures(hook: Hook, smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    notifiers = [
        WebhookNotifier(hook.url(f"/fail?token={TOKEN}")),
        Exploding(),
        EmailNotifier("127.0.0.1", controller.port, "backup@localhost", ["dba@example.com"], timeout=10),
        WebhookNotifier(hook.url("/ok")),
    ]
    errors = send_all(make_alert(), notifiers)
    assert len(errors) == 2
    assert errors[0].startswith("WebhookNotifier: ") and "500" in errors[0]
    assert TOKEN not in errors[0]
    assert errors[1] == "Exploding: RuntimeError: notifier bug"
    assert inbox.received.wait(10)
    assert [r["path"] for r in hook.requests] == [f"/fail?token={TOKEN}", "/ok"]


def test_send_all_with_nothing_to_do() -> None:
    assert send_all(make_alert(), []) == []


def _closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_non_ascii_owner_and_addresses_are_delivered() -> None:
    """A non-ASCII address needs SMTPUTF8: sent when the server offers it, a clear error when not."""
    import dataclasses
    inbox = Inbox()
    controller = BoundController(inbox, enable_SMTPUTF8=True)
    controller.start()
    try:
        alert = dataclasses.replace(make_alert(), owner="Jürgen Müller", app="商店")
        EmailNotifier("127.0.0.1", controller.port, "backup@exämple.de", ["jürgen@exämple.de"], timeout=10).send(alert)
        assert inbox.received.wait(10)
        assert inbox.envelopes[0].rcpt_tos == ["jürgen@exämple.de"]
        body = inbox.message().get_payload(decode=True).decode()
        assert "Jürgen Müller" in body and "商店" in body
    finally:
        controller.stop()
    plain = Inbox()
    controller = BoundController(plain, enable_SMTPUTF8=False)  # a server without SMTPUTF8
    controller.start()
    try:
        with pytest.raises(AlertDeliveryError, match="SMTPUTF8"):
            EmailNotifier("127.0.0.1", controller.port, "backup@localhost", ["jürgen@exämple.de"],
                          timeout=10).send(make_alert())
    finally:
        controller.stop()

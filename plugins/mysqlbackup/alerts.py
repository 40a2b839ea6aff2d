"""Failure alerts: the message, and notifiers (SMTP email, generic JSON webhook).

Secrets (SMTP passwords, webhook tokens in a URL's query or userinfo, header values) never go
into a log line, a repr or an exception message.
"""

from __future__ import annotations

import base64
import json
import logging
import smtplib
import ssl as ssl_lib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Iterable, Protocol

log = logging.getLogger(__name__)

ERROR_LIMIT = 4000
USER_AGENT = "mysql-backup-alerts/1"


class AlertDeliveryError(RuntimeError):
    """An alert could not be delivered (message is safe to log: no secrets)."""


@dataclass(frozen=True)
class Alert:
    """A failed task, or an incident a task found (``event``: MISSING, DAMAGED), as told to its owner."""

    instance: str
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    error: str
    log_url: str | None
    owner: str
    app: str
    when: str
    event: str = "FAILED"
    what: str = ""  # for an incident: what it concerns, e.g. "backup 20261124-020000F"

    def subject(self) -> str:
        """One-line subject, e.g. ``[mysql-backup] FAILED shop_main backup (try 2)`` or
        ``[mysql-backup] MISSING shop_main backup 20261124-020000F``."""
        if self.event == "FAILED":
            text = f"[mysql-backup] FAILED {self.instance} {self.task_id} (try {self.try_number})"
        else:
            text = f"[mysql-backup] {self.event} {self.instance} {self.what}"
        return " ".join(text.split())

    def error_excerpt(self) -> str:
        """The error, cut to ERROR_LIMIT characters with a note saying how much was cut."""
        error = self.error or ""
        if len(error) <= ERROR_LIMIT:
            return error
        return error[:ERROR_LIMIT] + f"\n[... truncated, {len(error) - ERROR_LIMIT} more characters]"

    def text(self) -> str:
        """A readable plain-text body with every field."""
        rows = [
            ("instance", self.instance),
            ("app", self.app),
            ("owner", self.owner),
            ("dag", self.dag_id),
            ("task", self.task_id),
            ("run", self.run_id),
            ("try", str(self.try_number)),
            ("when", self.when),
            ("log", self.log_url or "(no log URL)"),
        ]
        if self.event == "FAILED":
            first = f"MySQL backup task {self.task_id} failed for instance {self.instance}."
        else:
            first = f"{self.event}: {self.what} of instance {self.instance} (found by task {self.task_id})."
        lines = [first, ""]
        lines += [f"{name + ':':<10}{value}" for name, value in rows]
        lines += ["", "error:", self.error_excerpt() or "(no error message)", ""]
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The webhook JSON object: every field, the error cut like in text(), plus ``text``."""
        data = asdict(self)
        data["error"] = self.error_excerpt()
        data["text"] = self.text()
        return data


class Notifier(Protocol):
    """Anything that can deliver an alert; raises AlertDeliveryError when it cannot."""

    def send(self, alert: Alert) -> None:
        """Deliver one alert."""


class EmailNotifier:
    """Send alerts by SMTP (plain, STARTTLS or implicit TLS), optionally with login."""

    def __init__(self, host: str, port: int, sender: str, recipients: list[str],
                 username: str | None = None, password: str | None = None,
                 starttls: bool = False, ssl: bool = False, timeout: float = 30) -> None:
        if starttls and ssl:
            raise ValueError("choose one of starttls and ssl, not both")
        recipients = [r.strip() for r in recipients if r and r.strip()]
        if not recipients:
            raise ValueError("EmailNotifier needs at least one recipient")
        if password and not username:
            raise ValueError("an SMTP password needs a username")
        self.host = host
        self.port = int(port)
        self.sender = sender
        self.recipients = recipients
        self.username = username
        self._password = password
        self.starttls = starttls
        self.ssl = ssl
        self.timeout = timeout

    def __repr__(self) -> str:
        return (f"EmailNotifier(host={self.host!r}, port={self.port}, sender={self.sender!r}, "
                f"recipients={self.recipients!r}, username={self.username!r}, "
                f"password={'***' if self._password else None}, starttls={self.starttls}, ssl={self.ssl})")

    def message(self, alert: Alert) -> EmailMessage:
        """The email for an alert."""
        msg = EmailMessage()
        msg["Subject"] = alert.subject()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        msg.set_content(alert.text())
        return msg

    def send(self, alert: Alert) -> None:
        """Deliver the alert to every recipient; raise AlertDeliveryError on failure."""
        msg = self.message(alert)
        where = f"SMTP {self.host}:{self.port}"
        try:
            if self.ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl_lib.create_default_context())
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.starttls:
                    client.starttls(context=ssl_lib.create_default_context())
                if self.username:
                    client.login(self.username, self._password or "")
                refused = client.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertDeliveryError(
                f"{where}: login as {self.username!r} refused ({exc.smtp_code})") from None
        except smtplib.SMTPException as exc:
            raise AlertDeliveryError(f"{where}: {type(exc).__name__}: {_safe(str(exc), self._password)}") from None
        except OSError as exc:
            raise AlertDeliveryError(f"{where} unreachable: {_safe(str(exc), self._password)}") from None
        if refused:
            log.warning("%s refused some recipients: %s", where, sorted(refused))


class WebhookNotifier:
    """POST alerts as JSON to a URL (userinfo in the URL becomes HTTP basic auth)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/...: {redact_url(url)!r}")
        self._url = url
        self._headers = dict(headers or {})
        self.timeout = timeout
        self.display_url = redact_url(url)

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.display_url!r}, headers={sorted(self._headers)!r})"

    def _request(self, body: bytes) -> urllib.request.Request:
        """The POST request; userinfo moves from the URL to an Authorization header."""
        parts = urllib.parse.urlsplit(self._url)
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode("ascii")
        headers.update(self._headers)
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        return urllib.request.Request(url, data=body, headers=headers, method="POST")

    def send(self, alert: Alert) -> None:
        """POST the alert's JSON; raise AlertDeliveryError on a non-2xx answer or no answer."""
        body = json.dumps(alert.payload(), sort_keys=True).encode("utf-8")
        where = f"webhook {self.display_url}"
        secrets = self._secrets()
        try:
            request = self._request(body)
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
                response.read(65536)
        except urllib.error.HTTPError as exc:
            exc.close()  # release the connection held by the error response
            raise AlertDeliveryError(f"{where} answered HTTP {exc.code} {_safe(str(exc.reason), *secrets)}") from None
        except urllib.error.URLError as exc:
            raise AlertDeliveryError(f"{where} unreachable: {_safe(str(exc.reason), *secrets)}") from None
        except (OSError, ValueError) as exc:  # timeouts, resets, http.client errors, bad URLs
            raise AlertDeliveryError(f"{where} failed: {type(exc).__name__}: {_safe(str(exc), *secrets)}") from None
        if not 200 <= status < 300:
            raise AlertDeliveryError(f"{where} answered HTTP {status}")

    def _secrets(self) -> list[str]:
        """Strings that must not appear in a message: the URL, its query, password, header values."""
        parts = urllib.parse.urlsplit(self._url)
        found = [self._url, parts.query, parts.fragment, parts.password or ""]
        found += [str(v) for v in self._headers.values()]
        return [s for s in found if s]


def redact_url(url: str) -> str:
    """A URL safe to show: scheme, host, port and the first path segment.

    No userinfo, query or fragment, and nothing past the first path segment: Slack- and
    Teams-style webhooks carry their token in the path (``/services/T000/B000/XXXX``).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    segments = [seg for seg in parts.path.split("/") if seg]
    path = "/" + segments[0] + ("/..." if len(segments) > 1 else "") if segments else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))


def _safe(text: str, *secrets: str | None) -> str:
    """text with every secret (longest first) replaced by ***."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def send_all(alert: Alert, notifiers: Iterable[Notifier]) -> list[str]:
    """Send through every notifier; never raise; return the delivery errors (empty: all sent)."""
    errors: list[str] = []
    for notifier in notifiers:
        name = type(notifier).__name__
        try:
            notifier.send(alert)
        except Exception as exc:  # one broken notifier must not stop the others
            message = f"{name}: {exc}" if isinstance(exc, AlertDeliveryError) else f"{name}: {type(exc).__name__}: {exc}"
            log.warning("alert delivery failed: %s", message)
            errors.append(message)
        else:
            log.info("alert %r delivered by %s", alert.subject(), name)
    return errors

"""Where alert notifications go: log, console, email, Slack, webhook, or your own.

A channel is anything with ``name`` and ``async send(event)`` (:class:`Channel`). The
built-in ones are pydantic models, so rules files can name them (``type: webhook``).
Secrets (webhook secret, SMTP password, the Slack URL, which is itself a credential) are
``SecretStr``: they never appear in reprs, logs or alert messages.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import timedelta
from email.message import EmailMessage
from typing import Annotated, Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..config import Duration
from ..errors import ChannelError

__all__ = (
    "AlertEvent",
    "Channel",
    "ChannelConfig",
    "Console",
    "Email",
    "Log",
    "Slack",
    "Webhook",
)

logger = logging.getLogger("taskflow.alerts")

_frozen = ConfigDict(frozen=True, extra="forbid")


class AlertEvent(BaseModel):
    """One notification: a rule started firing, is still firing, or resolved.

    This is also the JSON body a webhook receives.
    """

    model_config = ConfigDict(frozen=True)

    alert_id: str
    rule: str
    severity: str
    state: Literal["firing", "resolved"]
    value: float | None
    threshold: float
    metric: str
    started_at: str  # ISO 8601, UTC
    resolved_at: str | None = None
    message: str
    conditions: list[dict[str, Any]] = Field(default_factory=list)


@runtime_checkable
class Channel(Protocol):
    """A place to send alerts. ``send`` raises on failure; the caller retries."""

    @property
    def name(self) -> str: ...

    async def send(self, event: AlertEvent) -> None: ...


class Log(BaseModel):
    """Structured log records on the ``taskflow.alerts`` logger (fields in ``extra``)."""

    model_config = _frozen
    type: Literal["log"] = "log"

    @property
    def name(self) -> str:
        return "log"

    async def send(self, event: AlertEvent) -> None:
        level = logging.ERROR if event.severity == "critical" else logging.WARNING
        if event.state == "resolved" or event.severity == "info":
            level = logging.INFO
        logger.log(
            level,
            "alert %s %s: %s",
            event.rule,
            event.state,
            event.message,
            extra={"alert": event.model_dump()},
        )


_COLOURS = {"critical": "#d00000", "warning": "#f2a900", "info": "#2b7bb9"}
_RESOLVED = "#2eb67d"


class Console(BaseModel):
    """A coloured line on the terminal (rich)."""

    model_config = _frozen
    type: Literal["console"] = "console"

    @property
    def name(self) -> str:
        return "console"

    async def send(self, event: AlertEvent) -> None:
        from rich.console import Console as RichConsole

        colour = (
            "green"
            if event.state == "resolved"
            else {"critical": "bold red", "warning": "yellow"}.get(event.severity, "cyan")
        )
        from rich.markup import escape

        RichConsole(stderr=True).print(
            f"[{colour}]{event.state.upper()} {event.severity}[/] "
            f"{escape(event.rule)}: {escape(event.message)}",
            highlight=False,
            soft_wrap=True,  # one line per event, also in a log file (no 80-column wrap)
        )


class Webhook(BaseModel):
    """POSTs the event as JSON. With ``secret``, adds ``X-Taskflow-Signature:
    sha256=<hex HMAC-SHA256 of timestamp + "." + body>`` and ``X-Taskflow-Timestamp``."""

    model_config = _frozen
    type: Literal["webhook"] = "webhook"
    # not in the repr: the path may hold a token (``name`` shows scheme and host)
    url: str = Field(pattern=r"^https?://", repr=False, description="Where to POST.")
    secret: SecretStr | None = Field(None, description="HMAC key for the signature header.")
    timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0))
    # extra headers may carry credentials too: neither shown nor dumped
    headers: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.hostname}"  # never the path: it may hold a token

    async def send(self, event: AlertEvent) -> None:
        await self.post(orjson.dumps(event.model_dump()))

    async def post(self, body: bytes) -> None:
        """POST ``body`` (JSON), signed as :meth:`send` signs an event."""
        headers = {"Content-Type": "application/json", **self.headers}
        if self.secret is not None:
            stamp = str(int(time.time()))
            headers["X-Taskflow-Timestamp"] = stamp
            headers["X-Taskflow-Signature"] = "sha256=" + sign(self.secret, stamp, body)
        await _post(self.url, body, headers, self.timeout)


def sign(secret: SecretStr, timestamp: str, body: bytes) -> str:
    """The signature a webhook receiver recomputes to check a delivery."""
    key = secret.get_secret_value().encode()
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Slack(BaseModel):
    """A Slack incoming-webhook message, coloured by severity (green when resolved)."""

    model_config = _frozen
    type: Literal["slack"] = "slack"
    url: SecretStr = Field(description="The incoming-webhook URL (a credential).")
    timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0))

    @property
    def name(self) -> str:
        return "slack"

    async def send(self, event: AlertEvent) -> None:
        colour = _RESOLVED if event.state == "resolved" else _COLOURS.get(event.severity, "#888")
        payload = {
            "text": f"[{event.state.upper()}] {event.rule}",
            "attachments": [
                {
                    "color": colour,
                    "title": f"{event.rule} ({event.severity}) {event.state}",
                    "text": event.message,
                    "fields": [
                        {"title": "value", "value": str(event.value), "short": True},
                        {"title": "threshold", "value": f"{event.threshold:g}", "short": True},
                        {"title": "since", "value": event.started_at, "short": False},
                    ],
                }
            ],
        }
        await self.post(payload)

    async def post(self, payload: dict[str, Any]) -> None:
        """POST a Slack message payload to the webhook."""
        await _post(
            self.url.get_secret_value(),
            orjson.dumps(payload),
            {"Content-Type": "application/json"},
            self.timeout,
        )


class Email(BaseModel):
    """An email through an SMTP server (aiosmtplib): STARTTLS or implicit TLS, and auth."""

    model_config = _frozen
    type: Literal["email"] = "email"
    host: str
    port: int = Field(587, ge=1, le=65535)
    sender: str = Field(description="From: address.")
    to: tuple[str, ...] = Field(min_length=1, description="Recipients.")
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = Field(True, description="Upgrade with STARTTLS (port 587).")
    tls: bool = Field(False, description="Implicit TLS from the start (port 465).")
    timeout: Duration = Field(timedelta(seconds=15), gt=timedelta(0))

    @property
    def name(self) -> str:
        return f"email {self.host}:{self.port}"

    async def send(self, event: AlertEvent) -> None:
        message = self.message(f"[{event.severity.upper()}] {event.rule} {event.state}")
        message.set_content(
            f"{event.message}\n\nrule: {event.rule}\nseverity: {event.severity}\n"
            f"state: {event.state}\nvalue: {event.value}\nthreshold: {event.threshold:g}\n"
            f"since: {event.started_at}\nalert id: {event.alert_id}\n"
        )
        await self.deliver(message)

    def message(self, subject: str) -> EmailMessage:
        """A message from ``sender`` to ``to`` with ``subject``, to fill and deliver."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message["Subject"] = subject
        return message

    async def deliver(self, message: EmailMessage) -> None:
        """Send ``message`` through the SMTP server."""
        import aiosmtplib  # imported when first used: most workers never send email

        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            start_tls=self.starttls and not self.tls,
            use_tls=self.tls,
            timeout=self.timeout.total_seconds(),
        )


async def _post(url: str, body: bytes, headers: dict[str, str], timeout: timedelta) -> None:
    import httpx  # imported when first used, like aiosmtplib

    # straight to the transport: httpx's client logs every request's full URL at INFO, and
    # a Slack or webhook URL can be a credential
    request = httpx.Request(
        "POST",
        url,
        content=body,
        headers=headers,
        extensions={"timeout": httpx.Timeout(timeout.total_seconds()).as_dict()},
    )
    async with httpx.AsyncHTTPTransport() as transport:
        response = await transport.handle_async_request(request)
        await response.aread()
    if response.status_code >= 300:
        # the status only: the URL may carry a token
        raise ChannelError(f"answered HTTP {response.status_code}")


ChannelConfig = Annotated[Log | Console | Webhook | Slack | Email, Field(discriminator="type")]
"""A built-in channel as it appears in a rule (``type`` picks which)."""

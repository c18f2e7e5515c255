"""Alert channels against real servers on loopback: webhook and Slack to a recording HTTP
server (the signature checked), email to an aiosmtpd server (plain, AUTH, STARTTLS), and
delivery with retries, where a channel whose server is down stops none of the others.

The delivery backoff (1 s, 2 s, 4 s) is scaled down by replacing ``anyio`` in the manager
module with a namespace whose ``sleep`` records the delay asked for and sleeps a fraction.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosmtplib
import anyio
import orjson
import pytest
from pydantic import SecretStr

from taskflow._clock import now_ms
from taskflow.alerts import (
    AlertEvent,
    AlertRule,
    Condition,
    Console,
    Email,
    Log,
    Slack,
    Webhook,
    sign,
)
from taskflow.alerts import manager as alert_manager
from taskflow.errors import ChannelError
from tests.alert_servers import (
    RecordingHTTPServer,
    SMTPRecorder,
    closed_port,
    self_signed_cert,
    signature_ok,
    wait_until,
)

pytestmark = pytest.mark.asyncio


def aiosmtpd_auth(test: Callable[..., Any]) -> Callable[..., Any]:
    """For tests whose server requires AUTH: aiosmtpd warns (in its own thread, where pytest
    makes warnings errors too) that it sets its deprecated Session.login_data on a
    successful AUTH, and that AUTH without TLS is unsafe (it is on loopback, on purpose)."""
    deprecated = pytest.mark.filterwarnings(
        "ignore:Session.login_data is deprecated:DeprecationWarning"
    )
    unsafe = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
    return deprecated(unsafe(test))  # type: ignore[no-any-return]


WEBHOOK_SECRET = "whsec-Qm42-never-logged"
SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-pw-Z9x3-never-logged"
HOOK_PATH = "/hooks/in/path-token-7Hk2"
SLACK_PATH = "/services/T0001/B0001/slack-token-4Jw8"
REQUIRED = ("alert_id", "rule", "severity", "state", "value", "threshold", "started_at", "message")
STARTED_AT = "2024-05-01T10:00:00.123000+00:00"
ALERT_ID = "0f3c9b1e5a7d4e21b6c8a9d0e1f2a3b4"
COLOURS = {"critical": "#d00000", "warning": "#f2a900", "info": "#2b7bb9"}
RESOLVED_GREEN = "#2eb67d"


@pytest.fixture
def http() -> Iterator[RecordingHTTPServer]:
    with RecordingHTTPServer() as server:
        yield server


def make_event(state: str = "firing", severity: str = "critical") -> AlertEvent:
    """The event the evaluator builds for a queue-depth rule (firing at 1500, or resolved
    at 3)."""
    rule = AlertRule(
        name="emails-backlog",
        conditions=[Condition(metric="queue_depth", queue="emails", op=">", threshold=1000)],
        severity=severity,
        message="{rule}: depth of {queue} is {value} (> {threshold})",
    )
    _, results = rule.evaluate([1500.0 if state == "firing" else 3.0])
    return alert_manager._event(rule, ALERT_ID, state, results, STARTED_AT, now_ms())


class Backoff:
    """Stands in for ``anyio`` in the manager module: records each delay ``_deliver``
    asks for and sleeps ``scale`` times it."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.sleep(delay * self.scale)


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> Backoff:
    fake = Backoff(scale=0.0)
    monkeypatch.setattr(alert_manager, "anyio", SimpleNamespace(sleep=fake.sleep))
    return fake


def logged(caplog: pytest.LogCaptureFixture, *, server_side: bool = False) -> str:
    """Every captured record, formatted; aiosmtpd's own (``mail.log``) only if asked."""
    return "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if server_side or not r.name.startswith("mail.log")
    )


def taskflow_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.levelname} {r.getMessage()} {r.__dict__.get('alert', '')}"
        for r in caplog.records
        if r.name.startswith("taskflow")
    )


# -- webhook --------------------------------------------------------------------------------


async def test_webhook_posts_the_event_as_json_signed(http: RecordingHTTPServer) -> None:
    event = make_event()
    hook = Webhook(url=http.url(HOOK_PATH), secret=SecretStr(WEBHOOK_SECRET))
    await hook.send(event)
    [request] = http.requests()
    assert (request.method, request.path) == ("POST", HOOK_PATH)
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    for name in REQUIRED:
        assert name in body, name
    assert body["alert_id"] == ALERT_ID
    assert body["rule"] == "emails-backlog"
    assert body["severity"] == "critical"
    assert body["state"] == "firing"
    assert body["value"] == 1500.0
    assert body["threshold"] == 1000.0
    assert body["metric"] == "queue_depth"
    assert body["started_at"] == STARTED_AT
    assert body["resolved_at"] is None
    assert body["message"] == "emails-backlog: depth of emails is 1500 (> 1000)"
    [condition] = body["conditions"]
    assert condition["queue"] == "emails"
    assert condition["holds"] is True
    assert body == orjson.loads(orjson.dumps(event.model_dump()))

    # the signature: taskflow's own sign() and an independent HMAC agree
    stamp = request.headers["x-taskflow-timestamp"]
    assert abs(int(stamp) - time.time()) < 30
    signature = request.headers["x-taskflow-signature"]
    assert signature == "sha256=" + sign(SecretStr(WEBHOOK_SECRET), stamp, request.body)
    assert signature_ok(request, WEBHOOK_SECRET)
    # and it fails with a wrong secret, another timestamp or a changed body
    assert signature != "sha256=" + sign(SecretStr("wrong-secret"), stamp, request.body)
    assert not signature_ok(request, "wrong-secret")
    assert signature != "sha256=" + sign(
        SecretStr(WEBHOOK_SECRET), str(int(stamp) + 1), request.body
    )
    tampered = request.body.replace(b"1500", b"1501")
    assert tampered != request.body
    assert signature != "sha256=" + sign(SecretStr(WEBHOOK_SECRET), stamp, tampered)
    # the secret itself travels nowhere
    assert WEBHOOK_SECRET.encode() not in request.body
    assert WEBHOOK_SECRET not in " ".join(request.headers.values())


async def test_webhook_resolved_event(http: RecordingHTTPServer) -> None:
    await Webhook(url=http.url(HOOK_PATH), secret=SecretStr(WEBHOOK_SECRET)).send(
        make_event("resolved", "warning")
    )
    [request] = http.requests(HOOK_PATH)
    body = request.json()
    assert body["state"] == "resolved"
    assert body["severity"] == "warning"
    assert body["value"] == 3.0
    assert body["resolved_at"] is not None and body["resolved_at"] >= body["started_at"]
    assert body["started_at"] == STARTED_AT
    assert signature_ok(request, WEBHOOK_SECRET)


async def test_webhook_without_secret_is_unsigned_and_sends_extra_headers(
    http: RecordingHTTPServer,
) -> None:
    await Webhook(url=http.url("/plain"), headers={"X-Team": "ops"}).send(make_event())
    [request] = http.requests("/plain")
    assert "x-taskflow-signature" not in request.headers
    assert "x-taskflow-timestamp" not in request.headers
    assert request.headers["x-team"] == "ops"
    assert request.json()["alert_id"] == ALERT_ID


@pytest.mark.parametrize("status", [500, 503, 404, 302])
async def test_webhook_error_status_raises_without_the_url(
    http: RecordingHTTPServer, status: int
) -> None:
    http.respond(HOOK_PATH, [status])
    with pytest.raises(ChannelError) as exc:
        await Webhook(url=http.url(HOOK_PATH), secret=SecretStr(WEBHOOK_SECRET)).send(make_event())
    assert str(exc.value) == f"answered HTTP {status}"
    assert len(http.requests(HOOK_PATH)) == 1


# -- Slack ----------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", ["critical", "warning", "info"])
async def test_slack_message_is_coloured_by_severity(
    http: RecordingHTTPServer, severity: str
) -> None:
    slack = Slack(url=SecretStr(http.url(SLACK_PATH)))
    await slack.send(make_event("firing", severity))
    await slack.send(make_event("resolved", severity))
    firing, resolved = (r.json() for r in http.requests(SLACK_PATH))

    assert firing["text"] == "[FIRING] emails-backlog"
    [attachment] = firing["attachments"]
    assert attachment["color"] == COLOURS[severity]
    assert attachment["title"] == f"emails-backlog ({severity}) firing"
    assert attachment["text"] == "emails-backlog: depth of emails is 1500 (> 1000)"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields == {"value": "1500.0", "threshold": "1000", "since": STARTED_AT}

    assert resolved["text"] == "[RESOLVED] emails-backlog"
    [attachment] = resolved["attachments"]
    assert attachment["color"] == RESOLVED_GREEN
    assert attachment["title"] == f"emails-backlog ({severity}) resolved"


async def test_slack_error_status_raises_without_the_url(http: RecordingHTTPServer) -> None:
    http.respond(SLACK_PATH, [500])
    with pytest.raises(ChannelError) as exc:
        await Slack(url=SecretStr(http.url(SLACK_PATH))).send(make_event())
    assert str(exc.value) == "answered HTTP 500"


async def test_no_url_token_in_any_log_at_info(
    http: RecordingHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await Slack(url=SecretStr(http.url(SLACK_PATH))).send(make_event())
    await Webhook(url=http.url(HOOK_PATH)).send(make_event())
    assert len(http.requests()) == 2
    text = logged(caplog)
    assert "slack-token-4Jw8" not in text
    assert "path-token-7Hk2" not in text


# -- email ----------------------------------------------------------------------------------


def email_channel(server: SMTPRecorder, **fields: Any) -> Email:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "sender": "taskflow@example.com",
        "to": ("ops@example.com", "oncall@example.com"),
        "starttls": False,
        "timeout": 5,
    }
    return Email.model_validate({**base, **fields})


async def test_email_arrives_with_subject_body_and_recipients() -> None:
    with SMTPRecorder() as server:
        channel = email_channel(server)
        await channel.send(make_event())
        await channel.send(make_event("resolved", "critical"))
        firing, resolved = server.received()
    assert firing.mail_from == "taskflow@example.com"
    assert firing.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    message = firing.message
    assert message["From"] == "taskflow@example.com"
    assert message["To"] == "ops@example.com, oncall@example.com"
    assert message["Subject"] == "[CRITICAL] emails-backlog firing"
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("emails-backlog: depth of emails is 1500 (> 1000)\n")
    for line in (
        "rule: emails-backlog",
        "severity: critical",
        "state: firing",
        "value: 1500.0",
        "threshold: 1000",
        f"since: {STARTED_AT}",
        f"alert id: {ALERT_ID}",
    ):
        assert line in body.splitlines(), line
    assert (firing.login, firing.tls) == (None, False)
    assert resolved.message["Subject"] == "[CRITICAL] emails-backlog resolved"
    assert "\nstate: resolved\r\n" in resolved.message.get_content()


@aiosmtpd_auth
async def test_email_with_auth_never_logs_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with SMTPRecorder(users={SMTP_USER: SMTP_PASSWORD}) as server:
        channel = email_channel(server, username=SMTP_USER, password=SMTP_PASSWORD)
        assert SMTP_PASSWORD not in repr(channel)
        await channel.send(make_event())
        [mail] = server.received()
        assert server.auth_attempts == [(SMTP_USER, True)]
    assert mail.login == SMTP_USER
    assert mail.message["Subject"] == "[CRITICAL] emails-backlog firing"
    assert SMTP_PASSWORD not in mail.message.as_string()
    assert SMTP_PASSWORD not in logged(caplog, server_side=True)


@aiosmtpd_auth
async def test_email_wrong_password_fails_without_showing_it(
    caplog: pytest.LogCaptureFixture, backoff: Backoff
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-pw-Lq77"
    with SMTPRecorder(users={SMTP_USER: SMTP_PASSWORD}) as server:
        channel = email_channel(server, username=SMTP_USER, password=wrong)
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as exc:
            await channel.send(make_event())
        assert wrong not in str(exc.value)
        await alert_manager._deliver(channel, make_event())  # logs, never raises
        assert server.received() == []
        # aiosmtplib tries each mechanism the server offers (PLAIN, LOGIN) per send
        assert set(server.auth_attempts) == {(SMTP_USER, False)}
        assert len(server.auth_attempts) >= 5
    text = taskflow_logged(caplog)
    assert "gave up on channel email 127.0.0.1" in text
    assert "SMTPAuthenticationError" in text
    assert wrong not in logged(caplog, server_side=True)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    made = self_signed_cert(tmp_path)
    if made is None:
        pytest.skip("needs the cryptography package or the openssl command to make a cert")
    return made


@aiosmtpd_auth
async def test_email_starttls_then_auth(
    tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """STARTTLS against a server that requires it before AUTH; the client trusts the
    test's self-signed certificate through SSL_CERT_FILE (Email has no CA option)."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))
    with SMTPRecorder(users={SMTP_USER: SMTP_PASSWORD}, tls_cert=tls_cert) as server:
        channel = email_channel(server, username=SMTP_USER, password=SMTP_PASSWORD, starttls=True)
        await channel.send(make_event())
        [mail] = server.received()
    assert mail.tls is True
    assert mail.login == SMTP_USER
    assert mail.message["Subject"] == "[CRITICAL] emails-backlog firing"
    assert SMTP_PASSWORD not in logged(caplog, server_side=True)


@aiosmtpd_auth
async def test_email_starttls_with_an_untrusted_certificate_fails_before_auth(
    tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with SMTPRecorder(users={SMTP_USER: SMTP_PASSWORD}, tls_cert=tls_cert) as server:
        channel = email_channel(server, username=SMTP_USER, password=SMTP_PASSWORD, starttls=True)
        with pytest.raises(ssl.SSLCertVerificationError) as exc:
            await channel.send(make_event())
        assert "certificate verify failed" in str(exc.value)
        assert SMTP_PASSWORD not in str(exc.value)
        assert server.received() == []
        assert server.auth_attempts == []  # the password never left


@aiosmtpd_auth
async def test_email_starttls_refused_by_the_server_never_sends_the_password() -> None:
    """A server that offers no STARTTLS: the channel (starttls=True by default) fails
    rather than authenticating in clear text."""
    with SMTPRecorder(users={SMTP_USER: SMTP_PASSWORD}) as server:
        channel = email_channel(server, username=SMTP_USER, password=SMTP_PASSWORD, starttls=True)
        with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS"):
            await channel.send(make_event())
        assert server.received() == []
        assert server.auth_attempts == []


# -- delivery: retries, and a failing channel stops nothing else ------------------------------


async def test_deliver_retries_until_the_channel_answers(
    http: RecordingHTTPServer, backoff: Backoff, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http.respond(HOOK_PATH, [500, 502])
    hook = Webhook(url=http.url(HOOK_PATH), secret=SecretStr(WEBHOOK_SECRET))
    await alert_manager._deliver(hook, make_event())
    requests = http.requests(HOOK_PATH)
    assert len(requests) == 3
    assert all(signature_ok(r, WEBHOOK_SECRET) for r in requests)
    assert len({r.body for r in requests}) == 1  # the same event each time
    assert backoff.delays == [1.0, 2.0]
    text = taskflow_logged(caplog)
    assert "channel webhook http://127.0.0.1 failed (attempt 1/4): ChannelError" in text
    assert "(attempt 2/4)" in text
    assert "attempt 3/4" not in text
    assert "gave up" not in text
    for secret in (WEBHOOK_SECRET, "path-token-7Hk2", HOOK_PATH):
        assert secret not in text


async def test_deliver_gives_up_after_the_attempts_without_raising(
    http: RecordingHTTPServer, backoff: Backoff, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http.respond(SLACK_PATH, [500] * 10)
    await alert_manager._deliver(Slack(url=SecretStr(http.url(SLACK_PATH))), make_event())
    assert len(http.requests(SLACK_PATH)) == alert_manager._DELIVERY_ATTEMPTS == 4
    assert backoff.delays == [1.0, 2.0, 4.0]
    errors = [r for r in caplog.records if r.name == "taskflow.alerts" and r.levelno >= 40]
    assert [r.getMessage() for r in errors] == [
        "alert emails-backlog (firing): gave up on channel slack"
    ]
    assert "slack-token-4Jw8" not in taskflow_logged(caplog)


async def test_a_channel_whose_server_is_down_stops_none_of_the_others(
    http: RecordingHTTPServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The evaluator starts one _deliver per channel in a task group; one channel's server
    is down (a closed port): the others deliver at once, before it even gives up, and
    nothing raises."""
    caplog.set_level(logging.DEBUG)
    backoff = Backoff(scale=0.2)  # the down channel gives up after ~1.4 s
    monkeypatch.setattr(alert_manager, "anyio", SimpleNamespace(sleep=backoff.sleep))
    down_token = "down-token-Pp03"
    down = Webhook(
        url=f"http://127.0.0.1:{closed_port()}/in/{down_token}", secret=SecretStr(WEBHOOK_SECRET)
    )
    event = make_event()
    with SMTPRecorder() as smtp:
        channels: list[Any] = [
            down,
            Slack(url=SecretStr(http.url(SLACK_PATH))),
            Webhook(url=http.url(HOOK_PATH), secret=SecretStr(WEBHOOK_SECRET)),
            email_channel(smtp),
            Log(),
        ]
        async with anyio.create_task_group() as deliveries:
            for channel in channels:
                deliveries.start_soon(alert_manager._deliver, channel, event)
            await http.wait_for(SLACK_PATH, 1, timeout=1.0)
            await http.wait_for(HOOK_PATH, 1, timeout=1.0)
            await wait_until(lambda: len(smtp.received()) == 1, timeout=1.0)
            # the others arrived while the down one is still in its first backoff
            assert backoff.delays[:1] == [1.0]
            assert "gave up" not in taskflow_logged(caplog)
    assert backoff.delays == [1.0, 2.0, 4.0]
    assert signature_ok(http.requests(HOOK_PATH)[0], WEBHOOK_SECRET)
    text = taskflow_logged(caplog)
    assert "alert emails-backlog firing: emails-backlog: depth of emails is 1500" in text
    assert text.count("channel webhook http://127.0.0.1 failed") == 4
    assert "ConnectError" in text
    assert "gave up on channel webhook http://127.0.0.1" in text
    for secret in (WEBHOOK_SECRET, down_token, "slack-token-4Jw8", "path-token-7Hk2"):
        assert secret not in text


async def test_a_raising_channel_is_logged_by_type_only(
    backoff: Backoff, caplog: pytest.LogCaptureFixture
) -> None:
    """A custom channel whose exception message holds a token: only the type is logged."""
    caplog.set_level(logging.DEBUG)

    class Leaky:
        name = "leaky"

        async def send(self, event: AlertEvent) -> None:
            raise RuntimeError("POST https://hooks.example/T/B/leaky-token-Ee11 failed")

    rule = AlertRule(
        name="leaky-rule",
        conditions=[Condition(metric="live_workers", op="<", threshold=1)],
        channels=[Leaky()],
    )
    await alert_manager._deliver(rule.channels[0], make_event())
    text = logged(caplog)
    assert "channel leaky failed (attempt 4/4): RuntimeError" in text
    assert "leaky-token-Ee11" not in text


@pytest.mark.asyncio
async def test_the_console_channel_writes_one_line_per_event_when_not_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = make_event().model_copy(update={"message": "x" * 150 + " end"})
    await Console().send(event)
    [line] = capsys.readouterr().err.splitlines()  # not a tty here: no wrap at 80 columns
    assert line.startswith("FIRING critical") and line.endswith("x" * 150 + " end")

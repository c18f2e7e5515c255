"""Loopback servers the alert tests deliver to, each recording what it received.

- :class:`RecordingHTTPServer`: a minimal HTTP/1.1 server (``http.server`` in a thread) that
  records every request (method, path, headers, body, arrival time) and answers each path
  with scripted statuses (200 once the script runs out). Being thread-based, one server
  serves tests in the test process and worker subprocesses alike.
- :class:`SMTPRecorder`: an aiosmtpd ``Controller`` (its own thread and loop) that records
  every message, who authenticated and whether the session was upgraded with STARTTLS.
- :func:`self_signed_cert`: a certificate for 127.0.0.1/localhost made by the test, with the
  ``cryptography`` package when installed, else the ``openssl`` command; None without both.

Imports nothing from pytest, so helpers can use it anywhere.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import anyio
import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

__all__ = (
    "HTTPRequest",
    "RecordingHTTPServer",
    "ReceivedMail",
    "SMTPRecorder",
    "closed_port",
    "free_port",
    "self_signed_cert",
    "signature_ok",
)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback nothing listens on right now (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port() -> int:
    """A port where connections are refused at once: a server that is down."""
    return free_port()


async def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Poll the synchronous ``check`` until it is true; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            if check():
                return
            await anyio.sleep(interval)


# -- HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HTTPRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() at arrival
    wall: float  # time.time() at arrival

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._record()

    def do_GET(self) -> None:
        self._record()

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = HTTPRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=time.monotonic(),
            wall=time.time(),
        )
        status = self.server.recorder._arrived(request)
        reply = b'{"ok": true}' if status < 300 else b'{"ok": false}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: RecordingHTTPServer


class RecordingHTTPServer:
    """``with RecordingHTTPServer() as server:``; ``server.url("/hook")`` is where to send."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[HTTPRequest] = []
        self._script: dict[str, list[int]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.recorder = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.server_address[1]
        return port

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def respond(self, path: str, statuses: Sequence[int]) -> None:
        """Answer the next requests to ``path`` with ``statuses`` in turn, then 200."""
        with self._lock:
            self._script[path] = list(statuses)

    def _arrived(self, request: HTTPRequest) -> int:
        with self._lock:
            self._requests.append(request)
            script = self._script.get(request.path)
            return script.pop(0) if script else 200

    def requests(self, path: str | None = None) -> list[HTTPRequest]:
        """What arrived (to ``path``, or anywhere), in order of arrival."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def json_bodies(self, path: str) -> list[Any]:
        return [r.json() for r in self.requests(path)]

    async def wait_for(self, path: str, count: int, timeout: float = 5.0) -> list[HTTPRequest]:
        """The requests to ``path`` once there are at least ``count`` of them."""
        await wait_until(lambda: len(self.requests(path)) >= count, timeout)
        return self.requests(path)


def signature_ok(request: HTTPRequest, secret: str) -> bool:
    """Recompute the documented signature, independently of taskflow: ``sha256=`` + hex
    HMAC-SHA256 with the secret over ``timestamp + "." + body``."""
    stamp = request.headers.get("x-taskflow-timestamp", "")
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
    given = request.headers.get("x-taskflow-signature", "")
    return hmac.compare_digest(given, "sha256=" + expected.hexdigest())


# -- SMTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None  # who authenticated, if anyone
    tls: bool  # upgraded with STARTTLS before the message


@dataclass
class _MailHandler:
    recorder: SMTPRecorder

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data  # login_data is deprecated (and warns)
        self.recorder._arrived(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                login=login.login.decode() if isinstance(login, LoginPassword) else None,
                tls=session.ssl is not None,
            )
        )
        return "250 OK"


@dataclass
class SMTPRecorder:
    """An SMTP server on loopback. With ``users``, AUTH is required (over plain text unless
    ``tls_cert`` is given, in which case STARTTLS is required before AUTH and MAIL).

    aiosmtpd itself sets the deprecated ``Session.login_data`` on a successful AUTH, which
    warns; tests that authenticate filter that DeprecationWarning (pytest makes warnings
    errors, in the server's thread too)."""

    users: dict[str, str] = field(default_factory=dict)
    tls_cert: tuple[Path, Path] | None = None  # (certificate, key) for STARTTLS
    port: int = 0
    mails: list[ReceivedMail] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)  # (login, accepted)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Self:
        self.port = free_port()
        params: dict[str, Any] = {}
        if self.users:
            params.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self.tls_cert is not None,
            )
        if self.tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls_cert)
            params.update(tls_context=context, require_starttls=True)
        self._controller = Controller(
            _MailHandler(self), hostname=LOOPBACK, port=self.port, ready_timeout=10, **params
        )
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._controller is not None
        self._controller.stop()

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        accepted = self.users.get(login) == password
        with self._lock:
            self.auth_attempts.append((login, accepted))
        return AuthResult(success=accepted, handled=False, auth_data=auth_data)

    def _arrived(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.mails.append(mail)

    def received(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self.mails)


# -- certificates -------------------------------------------------------------------------


def self_signed_cert(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for ``127.0.0.1`` and ``localhost`` and its key, written
    to ``directory``; None when neither ``cryptography`` nor ``openssl`` is available."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            return None
        _cert_with_openssl(cert, key)
    return cert, key


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert_with_openssl(cert_path: Path, key_path: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName=DNS:localhost,IP:{LOOPBACK}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )

"""A local fake of Twilio's Programmable Messaging REST API, driven by the real ``twilio`` SDK.

The fake is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port, daemon thread). The SDK
reaches it through :class:`RedirectingHttpClient`, a ``TwilioHttpClient`` that only swaps the
``https://api.twilio.com`` prefix of each URL, so the SDK's own request building, Basic auth, form
encoding, response parsing and error mapping (``TwilioRestException``) all stay real::

    with FakeTwilio() as fake:
        client = Client(fake.account_sid, fake.auth_token, http_client=fake.http_client(timeout=2))
        client.messages.create(to="+15551230001", from_="+15557654321", body="hi")
        assert fake.messages[0]["body"] == "hi"

Served (API version 2010-04-01, JSON and error bodies shaped like Twilio's):

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` -> 201 Message resource, or 400 with
  21604 (no To), 21211 (To not E.164 / ``whatsapp:`` + E.164), 21603 (no From nor
  MessagingServiceSid), 21212 (bad From), 21602 (no Body/MediaUrl/ContentSid), 21617 (Body over
  1600 characters), 21610 (recipient in :meth:`FakeTwilio.reject_numbers`).
* ``GET /2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}.json`` -> 200 or 404 (20404).
* Wrong Basic auth (or an account SID in the path that is not the caller's) -> 401 (20003).

Test controls (thread-safe): ``messages``, ``requests``, ``calls``, :meth:`FakeTwilio.fail_next`,
:meth:`FakeTwilio.slow`, :meth:`FakeTwilio.reject_numbers`, :meth:`FakeTwilio.reset`, and
:meth:`FakeTwilio.status_callback` which builds a status callback signed like Twilio signs it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

__all__ = [
    "TWILIO_API_BASE",
    "FakeTwilio",
    "RecordedRequest",
    "RedirectingHttpClient",
    "compute_signature",
]

#: The base URL the SDK builds every Messages API URL from (``twilio.rest.api.ApiBase``).
TWILIO_API_BASE = "https://api.twilio.com"
API_VERSION = "2010-04-01"


# --------------------------------------------------------------------------------------------------
# SDK side: point the real twilio.rest.Client somewhere else


class RedirectingHttpClient(TwilioHttpClient):
    """A ``TwilioHttpClient`` that sends requests for ``https://api.twilio.com`` to ``api_base``.

    Use it as ``twilio.rest.Client(sid, token, http_client=RedirectingHttpClient(api_base))``.
    ``api_base`` may carry a path prefix (``http://127.0.0.1:8123/twilio``); an empty ``api_base``
    changes nothing (production). URLs of other Twilio hosts pass through untouched, and so does
    everything else the parent class does (auth, form encoding, timeout, proxies, logging).
    Do not combine with ``Client(edge=..., region=...)``: those rewrite the host to
    ``api.<edge>.<region>.twilio.com`` before this client sees the URL.
    """

    def __init__(
        self,
        api_base: str,
        timeout: float | None = None,
        *,
        source: str = TWILIO_API_BASE,
        pool_connections: bool = True,
        proxy: dict[str, str] | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(
            pool_connections=pool_connections, timeout=timeout, proxy=proxy, max_retries=max_retries
        )
        self.api_base = api_base.rstrip("/")
        self.source = source.rstrip("/")
        if self.session is not None:
            # The parent mounts its adapter (pool size, retries) for "https://" only.
            self.session.mount("http://", self.session.get_adapter("https://"))

    def rewrite(self, url: str) -> str:
        """The URL actually requested for ``url``."""
        if not self.api_base or self.api_base == self.source:
            return url
        if url == self.source or url.startswith(self.source + "/"):
            return self.api_base + url[len(self.source) :]
        return url

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        response: Response = super().request(
            method,
            self.rewrite(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        return response


def compute_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """``X-Twilio-Signature`` for a form POST to ``url``: base64(HMAC-SHA1(token, url + k1v1k2v2...)).

    ``url`` is the full URL Twilio requested (scheme, host, path and query string); the POST params
    are appended sorted by name, each as name followed by value.
    """
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# --------------------------------------------------------------------------------------------------
# Twilio-like validation


_E164 = re.compile(r"\+[1-9]\d{1,14}")
_SHORT_CODE = re.compile(r"\d{3,8}")
_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_WHATSAPP = "whatsapp:"

# GSM 03.38 basic character set; the extension table characters cost two septets.
_GSM_BASIC = frozenset(
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./0123456789:;<=>?\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ\u00c4\u00d6\u00d1\u00dc"
    "\u00a7\u00bfabcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|\u20ac\f")
MAX_BODY_CHARS = 1600


def _bare_number(address: str) -> str:
    return address[len(_WHATSAPP) :] if address.startswith(_WHATSAPP) else address


def _is_valid_to(address: str) -> bool:
    return _E164.fullmatch(_bare_number(address)) is not None


def _is_valid_from(address: str) -> bool:
    if address.startswith(_WHATSAPP):
        return _E164.fullmatch(_bare_number(address)) is not None
    return any(p.fullmatch(address) for p in (_E164, _SHORT_CODE, _ALPHA_SENDER))


def num_segments(body: str) -> int:
    """How many SMS segments Twilio bills for ``body`` (GSM-7 160/153, else UCS-2 70/67)."""
    if not body:
        return 1
    if all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in body):
        units = sum(2 if c in _GSM_EXTENSION else 1 for c in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment)  # "Thu, 24 Aug 2023 05:01:45 +0000", as Twilio writes dates


class _TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def payload(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


# --------------------------------------------------------------------------------------------------
# The fake


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake received (every request, including failed ones)."""

    method: str
    path: str
    form: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _Failure:
    remaining: int
    status: int
    code: int
    message: str


@dataclass
class _State:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    calls: int = 0
    failure: _Failure | None = None
    latency: float = 0.0
    rejected: frozenset[str] = frozenset()


class FakeTwilio:
    """The fake Twilio API server plus its test controls. Use as a context manager or start/stop."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None, *,
                 port: int = 0) -> None:
        """`port` 0 picks a free one; a fixed port lets a test start the fake where a farm already
        points (Twilio coming back after an outage)."""
        self.port = port
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeTwilio:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"fake-twilio-{self._server.server_port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in slow()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: what replaces ``https://api.twilio.com``."""
        if self._server is None:
            raise RuntimeError("FakeTwilio is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    def http_client(self, timeout: float | None = None) -> RedirectingHttpClient:
        """An SDK http client that talks to this fake."""
        return RedirectingHttpClient(self.base_url, timeout=timeout)

    def client(self, timeout: float | None = None, auth_token: str | None = None) -> Any:
        """A real ``twilio.rest.Client`` for this fake's account (``auth_token`` to use a wrong one)."""
        from twilio.rest import Client

        return Client(
            self.account_sid,
            self.auth_token if auth_token is None else auth_token,
            http_client=self.http_client(timeout=timeout),
            environment={},
        )

    # -- inspection -----------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages, oldest first: the Message resource JSON plus ``status_callback``."""
        with self._lock:
            return [dict(m) for m in self._state.messages.values()]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    @property
    def calls(self) -> int:
        """HTTP requests received (any path, any outcome)."""
        with self._lock:
            return self._state.calls

    def message(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._state.messages[sid])

    # -- behaviour controls ---------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, code: int = 20500, message: str | None = None) -> None:
        """Answer the next ``n`` requests with a Twilio error body of ``status``/``code``."""
        text = message or HTTPStatus(status).phrase
        with self._lock:
            self._state.failure = _Failure(n, status, code, text) if n > 0 else None

    def slow(self, seconds: float) -> None:
        """Delay every following response by ``seconds`` (0 to stop)."""
        with self._lock:
            self._state.latency = max(0.0, seconds)

    def reject_numbers(self, numbers: Iterable[str]) -> None:
        """Answer 21610 (unsubscribed recipient) for these ``To`` addresses (replaces the set).

        A bare E.164 number blocks it on every channel; ``whatsapp:+...`` blocks WhatsApp only.
        """
        with self._lock:
            self._state.rejected = frozenset(numbers)

    def reset(self) -> None:
        """Forget messages, requests and every control."""
        with self._lock:
            self._state = _State()

    # -- status callbacks -----------------------------------------------------------------------

    def status_callback(
        self,
        message_sid: str,
        status: str,
        url: str,
        auth_token: str | None = None,
        extra: Mapping[str, str] | None = None,
        *,
        error_code: int | None = None,
    ) -> tuple[dict[str, str], str]:
        """The form params and ``X-Twilio-Signature`` of the status callback Twilio would POST to ``url``.

        ``To``/``From``/``MessagingServiceSid`` come from the stored message when the fake knows it
        (whose status then changes to ``status``). ``auth_token`` defaults to the fake's own;
        ``extra`` adds or overrides params (e.g. ``{"ErrorCode": "30003"}``).
        """
        with self._lock:
            stored = self._state.messages.get(message_sid)
            if stored is not None:
                stored["status"] = status
                stored["date_updated"] = _rfc2822(datetime.now(UTC))
                if error_code is not None:
                    stored["error_code"] = error_code
            known = dict(stored) if stored is not None else {}
        params: dict[str, str] = {
            "AccountSid": str(known.get("account_sid") or self.account_sid),
            "ApiVersion": API_VERSION,
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        for param, key in (("To", "to"), ("From", "from"), ("MessagingServiceSid", "messaging_service_sid")):
            if known.get(key):
                params[param] = str(known[key])
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        params.update(extra or {})
        token = self.auth_token if auth_token is None else auth_token
        return params, compute_signature(url, params, token)

    # -- request handling (called from server threads) ------------------------------------------

    def _handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        path = urlsplit(raw_path).path
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True) if body else {}
        with self._lock:
            self._state.calls += 1
            self._state.requests.append(RecordedRequest(method, raw_path, form, dict(headers)))
            latency = self._state.latency
        if latency and self._stopping.wait(latency):
            raise ConnectionAbortedError("fake Twilio stopped")
        try:
            self._take_failure()
            authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            account_sid = self._authenticate(authorization)
            return self._route(method, path, account_sid, {k: v[0] for k, v in form.items()})
        except _TwilioError as err:
            return err.status, err.payload()

    def _take_failure(self) -> None:
        with self._lock:
            failure = self._state.failure
            if failure is None:
                return
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._state.failure = None
        raise _TwilioError(failure.status, failure.code, failure.message)

    def _authenticate(self, authorization: str) -> str:
        scheme, _, encoded = authorization.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        ok = (
            scheme.lower() == "basic"
            and hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self.auth_token.encode())
        )
        if not ok:
            raise _TwilioError(401, 20003, "Authenticate")
        return user

    def _route(
        self, method: str, path: str, account_sid: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        prefix = f"/{API_VERSION}/Accounts/"
        if path.startswith(prefix):
            parts = path[len(prefix) :].split("/")
            if parts[0] != account_sid:
                raise _TwilioError(401, 20003, "Authenticate")
            if method == "POST" and parts[1:] == ["Messages.json"]:
                return 201, self._create_message(account_sid, form)
            if method == "GET" and len(parts) == 3 and parts[1] == "Messages" and parts[2].endswith(".json"):
                sid = parts[2].removesuffix(".json")
                with self._lock:
                    stored = self._state.messages.get(sid)
                    if stored is not None:
                        return 200, self._public(stored)
        raise _TwilioError(404, 20404, f"The requested resource {path} was not found")

    def _create_message(self, account_sid: str, form: dict[str, str]) -> dict[str, Any]:
        to = form.get("To", "")
        sender = form.get("From", "")
        service = form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        has_media = bool(form.get("MediaUrl") or form.get("ContentSid"))
        if not to:
            raise _TwilioError(400, 21604, "A 'To' phone number is required.")
        if not _is_valid_to(to):
            raise _TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            raise _TwilioError(400, 21603, "A 'From' phone number is required.")
        if sender and not _is_valid_from(sender):
            raise _TwilioError(
                400,
                21212,
                f"The 'From' number {sender} is not a valid phone number, shortcode, "
                "or alphanumeric sender ID.",
            )
        if not body and not has_media:
            raise _TwilioError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            raise _TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        with self._lock:
            rejected = self._state.rejected
        if to in rejected or _bare_number(to) in rejected:
            raise _TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")

        sid = "SM" + secrets.token_hex(16)
        now = _rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
        message: dict[str, Any] = {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": "1" if form.get("MediaUrl") else "0",
            "num_segments": str(num_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Through a Messaging Service without a From, Twilio first answers "accepted".
            "status": "accepted" if service and not sender else "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json",
                "feedback": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Feedback.json",
            },
            "to": to,
            "uri": uri,
            # Not part of Twilio's JSON (stripped from responses); kept for tests.
            "status_callback": form.get("StatusCallback") or None,
        }
        with self._lock:
            self._state.messages[sid] = message
            return self._public(message)

    @staticmethod
    def _public(message: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k != "status_callback"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeTwilio):
        super().__init__(address, handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeTwilio/1.0"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake = cast(_Server, self.server).fake
        try:
            status, payload = fake._handle(method, self.path, dict(self.headers.items()), body)
        except ConnectionAbortedError:
            return
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        logging.getLogger("tests.fakes.twilio").debug(format, *args)

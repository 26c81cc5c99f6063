"""Message senders: Twilio (WhatsApp and SMS, through the real SDK) and the console.

`TwilioSender.send` hands one message to Twilio and returns its SID, or raises `ProviderError`
whose `transient` says whether trying again can help: 429, 5xx, timeouts and connection errors
are transient; any other 4xx (21211 invalid number, 21610 unsubscribed, 21612 unreachable…) is
permanent. `ConsoleSender` is the channel of a farm without Twilio credentials: it logs the message
as a structured event (`notification.console`) and returns a synthetic id.

One SDK client per process, on `PooledHttpClient`: a keep-alive urllib3 pool all worker threads
share (the SDK's default requests-based transport keeps per-call state on the instance, so it
could not be shared, and spends more CPU per call).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import urllib3
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from app.adapters.circuit import CircuitBreaker
from app.errors import ProviderError
from app.logging import get_logger
from app.settings import TwilioSettings

#: The base URL the SDK builds every Messages API URL from (`twilio.rest.api.ApiBase`).
TWILIO_API_BASE: Final = "https://api.twilio.com"
WHATSAPP_PREFIX: Final = "whatsapp:"
#: Query parameter carrying our notification id on the status callback URL given to Twilio.
CALLBACK_REF: Final = "notification"

# The SDK logs every request and response at INFO; keep its chatter out of the farm's log.
_sdk_log = logging.getLogger("app.adapters.twilio_sdk")
_sdk_log.setLevel(logging.WARNING)


class PooledHttpClient(HttpClient):
    """The SDK's HTTP transport on urllib3: one keep-alive pool shared by every thread of a process.

    Requests for `https://api.twilio.com` go to `api_base` when it is set (a local fake, a proxy
    path such as `http://127.0.0.1:8123/twilio`); URLs of other Twilio hosts pass through. The
    SDK's default transport (requests) spends CPU per call on session machinery (hooks, cookies,
    environment lookups) and keeps per-call state on the instance, so it can't be shared by
    threads; urllib3's pool can, and skips that machinery. Nothing is retried
    here: a POST that may have reached Twilio is the job's decision (status callbacks settle it).
    Do not combine with `Client(edge=..., region=...)`, which rewrite the host first.
    """

    def __init__(self, api_base: str, timeout: float | None = None, *, pool_size: int = 128,
                 source: str = TWILIO_API_BASE) -> None:
        super().__init__(logger=_sdk_log, is_async=False, timeout=timeout)
        self.api_base = api_base.rstrip("/")
        self.source = source.rstrip("/")
        # block=False: a burst above `pool_size` opens extra connections instead of waiting.
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False, retries=False)

    def rewrite(self, url: str) -> str:
        """The URL actually requested for `url`."""
        if not self.api_base or self.api_base == self.source:
            return url
        if url == self.source or url.startswith(self.source + "/"):
            return self.api_base + url[len(self.source):]
        return url

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        target = self.rewrite(url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params, doseq=True)
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        body: str | None = None
        if data is not None:
            if sent.get("Content-Type", "").startswith("application/") and "json" in sent["Content-Type"]:
                body = json.dumps(data)
            else:
                body = urlencode(data, doseq=True)
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        seconds = timeout or self.timeout
        response = self.pool.request(
            method.upper(), target, body=body, headers=sent, redirect=allow_redirects,
            timeout=urllib3.Timeout(connect=seconds, read=seconds) if seconds else urllib3.Timeout(),
        )
        return Response(response.status, response.data.decode("utf-8", "replace"), response.headers)


class MessageSender(Protocol):
    """Hands one message to a channel; returns the provider's id or raises `ProviderError`."""

    def send(self, channel: str, to: str, body: str, *, status_callback: str | None = None,
             template: str = "") -> str: ...


class ConsoleSender:
    """The channel without Twilio: the message goes to the log, where the walkthrough shows it.

    The logger is looked up per message (a development channel, not a hot path), so the event
    follows the log configuration in force when it is sent rather than the one of its first use.
    """

    def send(self, channel: str, to: str, body: str, *, status_callback: str | None = None,
             template: str = "") -> str:
        sid = "CONSOLE" + secrets.token_hex(14)
        get_logger("notifications.console").info(
            "notification.console", to=to, channel=channel, template=template, body=body, sid=sid)
        return sid


class TwilioSender:
    """WhatsApp and SMS through Twilio's Messages API (one SDK client and pool for all threads)."""

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        # `environment` stops the SDK reading TWILIO_* from os.environ (it does when it's empty).
        self.client = Client(settings.account_sid, settings.auth_token,
                             http_client=PooledHttpClient(settings.api_base, timeout=settings.timeout_s),
                             environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""})

    def send(self, channel: str, to: str, body: str, *, status_callback: str | None = None,
             template: str = "") -> str:
        sender = self.settings.whatsapp_from if channel == "whatsapp" else self.settings.sms_from
        if not sender:
            raise ProviderError(f"No Twilio sender is configured for {channel}.", transient=False,
                                details={"provider": "twilio", "code": "NO_SENDER"})
        if channel == "whatsapp":
            to, sender = WHATSAPP_PREFIX + to, WHATSAPP_PREFIX + sender.removeprefix(WHATSAPP_PREFIX)
        options: dict[str, Any] = {"status_callback": status_callback} if status_callback else {}
        try:
            message = self.client.messages.create(to=to, from_=sender, body=body, **options)
        except TwilioRestException as exc:
            raise _rest_error(exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderError(f"Twilio could not be reached: {type(exc).__name__}.", transient=True,
                                details={"provider": "twilio", "code": _transport_code(exc)}) from exc
        except TwilioException as exc:
            raise ProviderError(f"Twilio refused the request: {exc}", transient=False,
                                details={"provider": "twilio", "code": "CLIENT_ERROR"}) from exc
        return str(message.sid)


def _rest_error(exc: TwilioRestException) -> ProviderError:
    """429 and 5xx may pass; any other 4xx is about this message and will not."""
    transient = exc.status == 429 or exc.status >= 500
    code = str(exc.code) if exc.code else f"HTTP_{exc.status}"
    return ProviderError(str(exc.msg)[:500], transient=transient,
                         details={"provider": "twilio", "code": code, "status": exc.status})


def _transport_code(exc: urllib3.exceptions.HTTPError) -> str:
    # (NewConnectionError is a ConnectTimeoutError in urllib3's hierarchy: ask for it first.)
    if isinstance(exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError):
        return "CONNECTION"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "TIMEOUT"
    return "TRANSPORT"


def callback_url(base: str, notification_id: object) -> str:
    """The status callback URL given to Twilio for one notification (the base plus its id)."""
    return f"{base}{'&' if '?' in base else '?'}{CALLBACK_REF}={notification_id}"


def signature_valid(settings: TwilioSettings, params: dict[str, str], signature: str | None,
                    notification_ref: str | None) -> bool:
    """Whether `X-Twilio-Signature` matches the callback URL we gave Twilio and these form params."""
    if not (settings.enabled and settings.status_callback_url and signature):
        return False
    base = settings.status_callback_url
    url = callback_url(base, notification_ref) if notification_ref is not None else base
    return bool(RequestValidator(settings.auth_token).validate(url, params, signature))


@dataclass(frozen=True)
class Senders:
    """The sender of each channel (`twilio` is None on a farm without Twilio credentials), and the
    process's circuit for Twilio (`app.adapters.circuit`)."""

    console: MessageSender
    twilio: MessageSender | None
    circuit: CircuitBreaker | None = None

    def for_channel(self, channel: str) -> MessageSender | None:
        return self.console if channel == "console" else self.twilio


@lru_cache(maxsize=8)
def senders_for(settings: TwilioSettings) -> Senders:
    """The process's senders for these settings (made once; SDK clients are per thread inside)."""
    if not settings.enabled:
        return Senders(console=ConsoleSender(), twilio=None)
    return Senders(console=ConsoleSender(), twilio=TwilioSender(settings),
                   circuit=CircuitBreaker("twilio", failure_threshold=settings.circuit_failures,
                                          pause_s=settings.circuit_pause_s))

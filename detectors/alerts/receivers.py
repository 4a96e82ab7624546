"""Senders: one delivery of a :class:`~.model.Notification` to one receiver integration.

A sender turns a notification into the request its integration documents (Alertmanager's
``/api/v2/alerts``, PagerDuty Events API v2, a Slack incoming webhook, a signed JSON webhook, an
email over SMTP) and sends it once. It either returns (delivered) or raises
:class:`DeliveryError`, whose ``retryable`` tells the notifier whether another attempt can
succeed (a timeout, a 5xx, a 429 or an SMTP 4xx) or not (a 4xx that says the request or the
configuration is wrong), and ``retry_after_s`` carries the receiver's ``Retry-After``. Senders
keep no state between calls and never retry themselves: the notifier owns retries and the
outbox, so a crash between two attempts loses nothing.

A notification may be delivered more than once (a crash after the receiver answered but before
``delivered`` was recorded), so every sender gives the receiver what it needs to drop a repeat:
PagerDuty's ``dedup_key`` is the incident id, Alertmanager merges alerts with equal labels, the
webhook carries ``X-Inferwatch-Notification-Id`` and emails a ``Message-ID`` made from the
notification id.

``render_*`` functions build the payloads and are pure (tests check them against the vendors'
schemas). Only the standard library is used: ``urllib.request`` and ``smtplib``. Secrets
(routing keys, tokens, passwords, the Slack webhook URL) never appear in an error message.

Resolved alerts go only to integrations with ``send_resolved`` (as in Alertmanager); a
notification left with no alert to tell is delivered by sending nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import http.client
import json
import math
import re
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from inferwatch.detectors.alerts.integrations import (
    AlertmanagerConfig,
    EmailConfig,
    IntegrationConfig,
    PagerDutyConfig,
    SlackConfig,
    WebhookConfig,
)
from inferwatch.detectors.alerts.model import Notification, NotificationAlert
from inferwatch.detectors.base import SEVERITY_ORDER

Clock = Callable[[], datetime]
PagerDutyAction = Literal["trigger", "acknowledge", "resolve"]

USER_AGENT = "inferwatch-alerts"
ERROR_BODY_CHARS = 300  # how much of a receiver's error answer goes into DeliveryError
MAX_RESPONSE_BYTES = 64 * 1024
PAGERDUTY_SUMMARY_CHARS = 1024  # the Events API v2 limit on payload.summary
# Our severities to PagerDuty's four (critical, error, warning, info).
PAGERDUTY_SEVERITY = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}
SLACK_MAX_ALERTS = 20  # alerts listed one per line in a Slack message; the rest are counted
# Alertmanager's webhook gives firing alerts this endsAt (Go's zero time); receivers written for
# its payload expect it.
ZERO_TIME = "0001-01-01T00:00:00Z"
WEBHOOK_SIGNATURE_HEADER = "X-Inferwatch-Signature"
WEBHOOK_TIMESTAMP_HEADER = "X-Inferwatch-Timestamp"
NOTIFICATION_ID_HEADER = "X-Inferwatch-Notification-Id"
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DeliveryError(Exception):
    """One delivery attempt failed.

    ``retryable`` is true when trying again later can succeed (connection errors, timeouts,
    HTTP 408/429/5xx, SMTP 4xx); false when the receiver rejected the request or the
    configuration is wrong, so retrying would only repeat the failure. ``retry_after_s`` is the
    wait the receiver asked for (``Retry-After``), if any.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def _delivery_error(
    receiver: str, kind: str, problem: str, *, retryable: bool, retry_after_s: float | None = None
) -> DeliveryError:
    """A :class:`DeliveryError` whose message starts with the receiver and integration."""
    return DeliveryError(
        f"receiver {receiver!r} ({kind}): {problem}", retryable=retryable, retry_after_s=retry_after_s
    )


class Sender(Protocol):
    """Delivers notifications to one receiver integration; raises :class:`DeliveryError`."""

    kind: str

    def send(self, notification: Notification) -> None:
        """Deliver ``notification`` once (no retries here), or raise :class:`DeliveryError`."""


def build_sender(config: IntegrationConfig, *, receiver: str) -> Sender:
    """The sender for one ``*_configs`` entry of ``receiver``.

    Raises ``ValueError`` naming the receiver when the configuration cannot work (both basic
    auth and a bearer token, a smarthost without a port, an empty ``routing_key`` or
    ``webhook_url``, …), so it fails at load, not at 3 am. It is pure: no network, no DNS, no
    files (connections and TLS contexts are made by ``send``), so start-up and ``alerts check``
    can build every sender to validate a routing file, even offline.
    """
    if isinstance(config, AlertmanagerConfig):
        return AlertmanagerSender(config, receiver=receiver)
    if isinstance(config, PagerDutyConfig):
        return PagerDutySender(config, receiver=receiver)
    if isinstance(config, SlackConfig):
        return SlackSender(config, receiver=receiver)
    if isinstance(config, WebhookConfig):
        return WebhookSender(config, receiver=receiver)
    if isinstance(config, EmailConfig):
        return EmailSender(config, receiver=receiver)
    raise TypeError(f"receiver {receiver!r}: no sender for {type(config).__name__}")


# --------------------------------------------------------------------------- shared helpers


def _utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with milliseconds and ``Z`` (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deliverable_alerts(config: IntegrationConfig, notification: Notification) -> list[NotificationAlert]:
    """The alerts this integration is told about: resolved ones only when ``send_resolved``."""
    if config.send_resolved:
        return list(notification.alerts)
    return notification.firing


def common_labels(alerts: Sequence[NotificationAlert]) -> dict[str, str]:
    """The label pairs every alert has (Alertmanager's ``CommonLabels``)."""
    if not alerts:
        return {}
    common = dict(alerts[0].labels)
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
    return common


def common_annotations(alerts: Sequence[NotificationAlert]) -> dict[str, str]:
    """The annotation pairs every alert has (Alertmanager's ``CommonAnnotations``)."""
    if not alerts:
        return {}
    common = dict(alerts[0].annotations)
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert.annotations.get(k) == v}
    return common


def notification_title(
    notification: Notification, alerts: Sequence[NotificationAlert], *, parenthesized: bool = False
) -> str:
    """Alertmanager's default title: ``[FIRING:2] prompt_injection service=chat``.

    The status counts firing alerts; then the ``alertname`` and the other group labels
    (``key=value``). With ``parenthesized`` the other labels are in parentheses, as in an email
    subject: ``[FIRING:2] prompt_injection (service=chat)``. A notification without group labels
    names what all its alerts share (alertname, service, model).
    """
    firing = sum(1 for a in alerts if a.state == "firing")
    status = f"FIRING:{firing}" if firing else "RESOLVED"
    labels = dict(notification.group_labels)
    if not labels:
        common = common_labels(alerts)
        labels = {k: common[k] for k in ("alertname", "service", "model") if k in common}
    name = labels.pop("alertname", None) or "inferwatch"
    rest = [f"{k}={v}" for k, v in sorted(labels.items())]
    if not rest:
        return f"[{status}] {name}"
    if parenthesized:
        return f"[{status}] {name} ({', '.join(rest)})"
    return f"[{status}] {name} {' '.join(rest)}"


def _state_word(alert: NotificationAlert) -> str:
    if alert.state == "resolved":
        return "resolved"
    return "acknowledged" if alert.incident_status == "acknowledged" else "firing"


def _ack_text(alert: NotificationAlert) -> str | None:
    """``acknowledged by alice: looking`` (or ``resolved by …``) when someone acted on it."""
    if alert.incident_status == "open" or not alert.actor:
        return None
    verb = "acknowledged" if alert.incident_status == "acknowledged" else "resolved"
    text = f"{verb} by {alert.actor}"
    return f"{text}: {alert.note}" if alert.note else text


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _require_secret(value: SecretStr, name: str, receiver: str, kind: str, *, exact: bool = True) -> str:
    """``value``'s text; ``ValueError`` when it is empty (an unset environment variable in the
    routing file, typically) or, when ``exact``, has surrounding whitespace (a secret file's
    trailing newline) that the receiver would reject as a wrong key on every delivery."""
    text = value.get_secret_value()
    if not text.strip():
        raise ValueError(f"receiver {receiver!r} ({kind}): {name} is empty; set it to the value to use")
    if exact and text != text.strip():
        raise ValueError(
            f"receiver {receiver!r} ({kind}): {name} has leading or trailing whitespace "
            "(a newline from a secret file?); remove it"
        )
    return text


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), else None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    return max(0.0, seconds) if math.isfinite(seconds) else None


# --------------------------------------------------------------------------- HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would turn a redirected POST into a body-less GET and report
    success for a delivery that never happened."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


# Proxies come from the environment (HTTPS_PROXY, NO_PROXY), as for any other HTTP client.
_OPENER = urllib.request.build_opener(_NoRedirect())


# What http.client refuses in a request line (its _contains_disallowed_url_pchar_re).
_URL_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")


def _http_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class _HttpTarget:
    """Where an HTTP sender posts, and how to name it in errors without leaking secrets."""

    def __init__(
        self,
        receiver: str,
        kind: str,
        url: str,
        *,
        show_path: bool,
        secrets: Sequence[str] = (),
        clock: Clock = _utcnow,
    ) -> None:
        if _URL_UNSENDABLE.search(url):
            # http.client refuses it on every attempt, with an error that quotes the path (where
            # Slack's and many webhooks' tokens are): refuse it here, without showing it.
            raise ValueError(f"receiver {receiver!r} ({kind}): the URL contains a space or a control "
                             "character; remove it (or percent-encode a space as %20)")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"receiver {receiver!r} ({kind}): the URL must be http(s)://host/…")
        self.receiver, self.kind, self.url, self.clock = receiver, kind, url, clock
        # Userinfo and query strings often hold tokens; Slack's and many webhooks' paths do too.
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self.where = f"{parts.scheme}://{netloc}{parts.path if show_path else ''}"
        self.secrets = tuple(s for s in (*secrets, parts.password or "") if s)

    def error(
        self, problem: str, *, retryable: bool, retry_after_s: float | None = None, context: str = ""
    ) -> DeliveryError:
        text = f"{context}: {problem}" if context else problem
        return _delivery_error(
            self.receiver,
            self.kind,
            _redact(text, self.secrets),
            retryable=retryable,
            retry_after_s=retry_after_s,
        )

    def post(
        self, body: bytes, headers: Mapping[str, str], timeout: float, *, context: str = ""
    ) -> tuple[int, bytes]:
        """POST ``body``; returns (status, body) for a 2xx, raises :class:`DeliveryError` otherwise.

        ``context`` (e.g. which of several requests this is) starts the error's description.
        """
        return self.request("POST", body, headers, timeout, context=context)

    def request(
        self, method: str, body: bytes | None, headers: Mapping[str, str], timeout: float, *,
        context: str = "", suffix: str = "",
    ) -> tuple[int, bytes]:
        """:meth:`post` with another method (``GET``, ``DELETE``), to the URL plus ``suffix``."""
        request = urllib.request.Request(
            self.url + suffix,
            data=body,
            method=method,
            headers={"User-Agent": USER_AGENT, **({"Content-Type": "application/json"} if body is not None
                                                   else {}), **headers},
        )
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return int(response.status), response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            raise self._status_error(exc, context) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise self.error(
                    f"TLS certificate of {self.where} not trusted: {reason.verify_message}",
                    retryable=False,
                    context=context,
                ) from None
            retryable = isinstance(reason, OSError)
            raise self.error(
                f"cannot reach {self.where}: {reason}", retryable=retryable, context=context
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets mid-answer
            raise self.error(
                f"no answer from {self.where}: {type(exc).__name__}: {exc}", retryable=True, context=context
            ) from None
        except ValueError as exc:
            raise self.error(f"bad URL: {exc}", retryable=False, context=context) from None

    def _status_error(self, exc: urllib.error.HTTPError, context: str) -> DeliveryError:
        status = int(exc.code)
        try:
            text = exc.read(MAX_RESPONSE_BYTES).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            text = ""
        finally:
            exc.close()
        excerpt = _truncate(" ".join(text.split()), ERROR_BODY_CHARS)
        if 300 <= status < 400:
            problem = f"HTTP {status} from {self.where}: redirects are not followed; configure the final URL"
            return self.error(problem, retryable=False, context=context)
        retryable = _http_retryable(status)
        retry_after = parse_retry_after(exc.headers.get("Retry-After"), self.clock()) if exc.headers else None
        problem = f"HTTP {status} from {self.where}" + (f": {excerpt}" if excerpt else "")
        if status in (401, 403):
            problem += (f" (receiver {self.receiver!r} refused the credentials: check its secret, token or "
                        "key; once fixed, a restart sends again what failed)")
        return self.error(
            problem, retryable=retryable, retry_after_s=retry_after if retryable else None, context=context
        )


# --------------------------------------------------------------------------- Alertmanager


def label_name(key: str) -> str:
    """``key`` as a valid Prometheus label name (``[A-Za-z_][A-Za-z0-9_]*``): Alertmanager
    rejects a whole POST for one bad name, so other characters become ``_``."""
    if _LABEL_NAME.fullmatch(key):
        return key
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", key)
    return fixed if fixed and not fixed[0].isdigit() else f"_{fixed}"


def _label_set(values: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        if value != "":  # an empty label is no label, in Prometheus and Alertmanager
            out.setdefault(label_name(key), value)
    return out


def render_alertmanager_alerts(
    alerts: Sequence[NotificationAlert],
    *,
    now: datetime,
    ends_at_after_s: float,
    generator_url: str | None = None,
    supersede: bool = True,
) -> list[dict[str, Any]]:
    """The ``postableAlerts`` body of ``POST /api/v2/alerts``.

    Firing alerts end ``ends_at_after_s`` from ``now`` (a notifier that keeps re-sending keeps
    them firing; one that is gone lets them lapse); resolved alerts end at the alert's
    ``ends_at``. Annotations carry the incident's status, who acted and their note.

    ``severity`` is a label, and Alertmanager tells alerts apart by their labels: an incident
    that escalated would leave its alert of the lower severity firing beside the new one until
    its ``endsAt``. So a changed alert also resolves its copies at every lower
    severity (annotation ``superseded_by``); Alertmanager pages nobody for an alert it never
    held firing. ``supersede=False`` (an integration without ``send_resolved``) leaves them out.
    """
    out = []
    for alert in alerts:
        if supersede:
            out.extend(_superseded(alert, now))
        starts = alert.starts_at if alert.starts_at.tzinfo else alert.starts_at.replace(tzinfo=UTC)
        if alert.state == "firing":
            ends = now + timedelta(seconds=ends_at_after_s)
        else:
            ends = alert.ends_at or now
            ends = ends if ends.tzinfo else ends.replace(tzinfo=UTC)
        ends = max(ends, starts)  # Alertmanager rejects an alert that ends before it starts
        annotations = dict(alert.annotations)
        annotations.setdefault("incident_status", alert.incident_status)
        if alert.actor:
            annotations.setdefault("actor", alert.actor)
        if alert.note:
            annotations.setdefault("note", alert.note)
        item: dict[str, Any] = {
            "labels": _label_set(alert.labels),
            "annotations": _label_set(annotations),
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        }
        if generator_url:
            item["generatorURL"] = generator_url
        out.append(item)
    return out


def _superseded(alert: NotificationAlert, now: datetime) -> list[dict[str, Any]]:
    """Resolved copies of a changed alert at every severity below its own (see above)."""
    severity = alert.labels.get("severity")
    if not alert.changed or severity not in SEVERITY_ORDER:
        return []
    lower = [s for s, rank in SEVERITY_ORDER.items() if rank < SEVERITY_ORDER[severity]]
    starts = alert.starts_at if alert.starts_at.tzinfo else alert.starts_at.replace(tzinfo=UTC)
    ends = rfc3339(max(now, starts))
    return [{"labels": _label_set({**alert.labels, "severity": s}),
             "annotations": _label_set({"superseded_by": severity}),
             "startsAt": rfc3339(starts), "endsAt": ends} for s in lower]


def alertmanager_target(config: AlertmanagerConfig, receiver: str, path: str, *, clock: Clock = _utcnow,
                        ) -> tuple[dict[str, str], _HttpTarget]:
    """The headers (credentials) and target for ``path`` of an Alertmanager's API."""
    headers: dict[str, str] = {}
    if config.basic_auth_username:
        pair = f"{config.basic_auth_username}:{_secret(config.basic_auth_password)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif config.bearer_token is not None:
        headers["Authorization"] = f"Bearer {_secret(config.bearer_token)}"
    target = _HttpTarget(
        receiver, "alertmanager", config.url.rstrip("/") + path, show_path=True,
        secrets=(_secret(config.basic_auth_password), _secret(config.bearer_token)), clock=clock,
    )
    return headers, target


class AlertmanagerSender:
    """POSTs alerts to an Alertmanager's ``/api/v2/alerts``, which groups and routes them itself."""

    kind = "alertmanager"

    def __init__(self, config: AlertmanagerConfig, *, receiver: str, clock: Clock = _utcnow) -> None:
        if config.bearer_token is not None and (config.basic_auth_username or config.basic_auth_password):
            raise ValueError(
                f"receiver {receiver!r} (alertmanager): set either basic_auth_* or bearer_token, not both"
            )
        if config.basic_auth_password is not None and not config.basic_auth_username:
            raise ValueError(
                f"receiver {receiver!r} (alertmanager): basic_auth_password needs basic_auth_username"
            )
        if config.bearer_token is not None:
            _require_secret(config.bearer_token, "bearer_token", receiver, self.kind)
        self.config, self.receiver, self.clock = config, receiver, clock
        self._headers, self._target = alertmanager_target(config, receiver, "/api/v2/alerts", clock=clock)

    def send(self, notification: Notification) -> None:
        alerts = deliverable_alerts(self.config, notification)
        if not alerts:
            return
        payload = render_alertmanager_alerts(
            alerts, now=self.clock(), ends_at_after_s=self.config.ends_at_after_s,
            supersede=self.config.send_resolved,
        )
        self._target.post(json.dumps(payload).encode(), self._headers, self.config.timeout_s)


# --------------------------------------------------------------------------- PagerDuty


def pagerduty_action(alert: NotificationAlert, *, send_acknowledged: bool) -> PagerDutyAction:
    """``resolve`` once resolved, ``acknowledge`` when acknowledged (if sent), else ``trigger``."""
    if alert.state == "resolved":
        return "resolve"
    if alert.incident_status == "acknowledged" and send_acknowledged:
        return "acknowledge"
    return "trigger"


def pagerduty_summary(alert: NotificationAlert) -> str:
    """One line for the page: title, then subject and service (at most 1024 characters)."""
    title = alert.annotations.get("title") or alert.labels.get("alertname") or "inferwatch incident"
    where = [f"{k}={alert.labels[k]}" for k in ("subject", "service") if alert.labels.get(k)]
    text = f"{title} ({', '.join(where)})" if where else title
    return _truncate(text, PAGERDUTY_SUMMARY_CHARS)


def render_pagerduty_event(
    alert: NotificationAlert, config: PagerDutyConfig, *, routing_key: str
) -> dict[str, Any]:
    """One Events API v2 event for ``alert``; ``dedup_key`` is the incident id.

    Acknowledge and resolve events carry only the routing key, action and dedup key (all the
    API reads for them); trigger events carry the payload, and links when ``client_url`` is set.
    """
    action = pagerduty_action(alert, send_acknowledged=config.send_acknowledged)
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.incident_id,
    }
    if action != "trigger":
        return event
    details: dict[str, Any] = {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "incident_status": alert.incident_status,
        "count": alert.count,
        "score": alert.score,
    }
    if alert.actor:
        details["actor"] = alert.actor
    if alert.note:
        details["note"] = alert.note
    payload: dict[str, Any] = {
        "summary": pagerduty_summary(alert),
        "source": config.source,
        "severity": PAGERDUTY_SEVERITY.get(alert.severity, "error"),
        "timestamp": rfc3339(alert.starts_at),
        "custom_details": details,
    }
    component = config.component or alert.labels.get("model")
    if component:
        payload["component"] = component
    if alert.labels.get("service"):
        payload["group"] = alert.labels["service"]
    if alert.labels.get("kind"):
        payload["class"] = alert.labels["kind"]
    event["payload"] = payload
    event["client"] = "inferwatch"
    if config.client_url:
        event["client_url"] = config.client_url
        event["links"] = [{"href": config.client_url, "text": "inferwatch"}]
    return event


def pagerduty_alerts(config: PagerDutyConfig, notification: Notification) -> list[NotificationAlert]:
    """The alerts to send an event for: the deliverable ones that are news (``changed``).

    A notification carries its group's whole state, but PagerDuty acts per alert: an event for
    every alert of the group would re-trigger each open incident whenever one of them changes
    (a group of 200: 201 requests for one new incident) and run into the Events API's rate
    limit. An alert carried along unchanged was told before; its incident is still open there.
    """
    return [a for a in deliverable_alerts(config, notification) if a.changed]


class PagerDutySender:
    """PagerDuty Events API v2: one event per changed alert (trigger, acknowledge or resolve).

    Only alerts that are news for PagerDuty (:func:`pagerduty_alerts`) are sent; a notification
    with none is delivered without a request. A retried notification sends all its events
    again, those accepted before the failure included; PagerDuty folds repeats into the incident
    with the same ``dedup_key``, so a retry never opens a second incident.
    """

    kind = "pagerduty"

    def __init__(self, config: PagerDutyConfig, *, receiver: str, clock: Clock = _utcnow) -> None:
        key = _require_secret(config.routing_key, "routing_key", receiver, self.kind)
        self.config, self.receiver = config, receiver
        self._target = _HttpTarget(
            receiver, self.kind, config.url, show_path=True, secrets=(key,), clock=clock
        )

    def send(self, notification: Notification) -> None:
        alerts = pagerduty_alerts(self.config, notification)
        key = _secret(self.config.routing_key)
        for done, alert in enumerate(alerts):
            body = json.dumps(render_pagerduty_event(alert, self.config, routing_key=key)).encode()
            context = f"event for incident {alert.incident_id} ({done} of {len(alerts)} sent before it)"
            self._target.post(body, {}, self.config.timeout_s, context=context)


# --------------------------------------------------------------------------- Slack


def _slack_escape(text: str) -> str:
    """Slack's three control characters (its docs: escape &, < and > in message text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_alert_line(alert: NotificationAlert) -> str:
    """``• *high* user:7f3a — Prompt injection attempts (acknowledged by alice: on it)``."""
    title = alert.annotations.get("title") or alert.labels.get("alertname", "")
    subject = alert.labels.get("subject", alert.incident_id)
    prefix = "~resolved~ " if alert.state == "resolved" else ""
    line = f"• {prefix}*{_slack_escape(alert.severity)}* `{_slack_escape(subject)}` — {_slack_escape(title)}"
    ack = _ack_text(alert)
    return f"{line} _({_slack_escape(ack)})_" if ack else line


def render_slack_message(
    notification: Notification, alerts: Sequence[NotificationAlert], config: SlackConfig
) -> dict[str, Any]:
    """The incoming-webhook JSON: a title line as Alertmanager's, then one line per alert."""
    lines = [f"*{_slack_escape(notification_title(notification, alerts))}*"]
    lines += [slack_alert_line(a) for a in alerts[:SLACK_MAX_ALERTS]]
    if len(alerts) > SLACK_MAX_ALERTS:
        lines.append(f"… and {len(alerts) - SLACK_MAX_ALERTS} more")
    message: dict[str, Any] = {"text": "\n".join(lines)}
    if config.channel:
        message["channel"] = config.channel
    if config.username:
        message["username"] = config.username
    return message


class SlackSender:
    """A Slack incoming webhook. Its URL is a secret: errors name only the host."""

    kind = "slack"

    def __init__(self, config: SlackConfig, *, receiver: str, clock: Clock = _utcnow) -> None:
        self.config, self.receiver = config, receiver
        url = _require_secret(config.webhook_url, "webhook_url", receiver, self.kind)
        self._target = _HttpTarget(receiver, self.kind, url, show_path=False, secrets=(url,), clock=clock)

    def send(self, notification: Notification) -> None:
        alerts = deliverable_alerts(self.config, notification)
        if not alerts:
            return
        body = json.dumps(render_slack_message(notification, alerts, self.config)).encode()
        self._target.post(body, {}, self.config.timeout_s)


# --------------------------------------------------------------------------- webhook


def _webhook_alert(alert: NotificationAlert) -> dict[str, Any]:
    return {
        "status": alert.state,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at) if alert.state == "resolved" and alert.ends_at else ZERO_TIME,
        "generatorURL": "",
        "fingerprint": alert.incident_id,
        "incident_id": alert.incident_id,
        "incident_status": alert.incident_status,
        "updated_at": rfc3339(alert.updated_at),
        "actor": alert.actor,
        "note": alert.note,
        "severity": alert.severity,
        "score": alert.score,
        "count": alert.count,
    }


def render_webhook_payload(
    notification: Notification, alerts: Sequence[NotificationAlert], *, max_alerts: int = 0
) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) plus our fields.

    Ours: per alert ``incident_id``, ``incident_status``, ``actor``, ``note``, ``severity``,
    ``score``, ``count``, ``updated_at``; at the top ``notification_id`` (the same for every
    attempt of one notification: drop a repeat) and ``seq`` (1, 2, … per group and receiver).
    With ``max_alerts`` only the first that many alerts are listed and ``truncatedAlerts``
    counts the rest; the common labels are still those of all alerts.
    """
    listed = list(alerts[:max_alerts]) if max_alerts else list(alerts)
    return {
        "version": "4",
        "receiver": notification.receiver,
        "status": "firing" if any(a.state == "firing" for a in alerts) else "resolved",
        "alerts": [_webhook_alert(a) for a in listed],
        "groupLabels": dict(notification.group_labels),
        "commonLabels": common_labels(alerts),
        "commonAnnotations": common_annotations(alerts),
        "externalURL": "",
        "groupKey": notification.group_key,
        "truncatedAlerts": len(alerts) - len(listed),
        "notification_id": notification.id,
        "seq": notification.seq,
    }


def sign_webhook(timestamp: str, body: bytes, secret: str) -> str:
    """The ``X-Inferwatch-Signature`` value: ``sha256=`` + hex HMAC-SHA256, keyed by ``secret``,
    of ``timestamp`` (the ``X-Inferwatch-Timestamp`` value), ``.`` and the body bytes.

    The timestamp is signed so that it cannot be changed: a captured request replayed later
    keeps its old timestamp, which the receiver refuses once it is too old.
    """
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class WebhookSender:
    """A generic JSON webhook, modelled on Alertmanager's (see :func:`render_webhook_payload`).

    Headers: ``Content-Type: application/json``, ``X-Inferwatch-Notification-Id`` (equal to the
    body's ``notification_id``: a receiver that has seen it already can answer 2xx and drop it),
    and, when ``secret`` is set, ``X-Inferwatch-Timestamp`` (Unix seconds of this attempt, as
    decimal digits) and ``X-Inferwatch-Signature: sha256=<hex>``, the HMAC-SHA256 keyed by the
    secret of the timestamp, ``.`` and the exact body bytes (as Stripe and Slack sign). A
    receiver verifies it so, before parsing the JSON::

        timestamp = request.headers["X-Inferwatch-Timestamp"]
        if not (timestamp.isascii() and timestamp.isdigit()):
            reject (401)
        if abs(time.time() - int(timestamp)) > 300:
            reject (401)  # older than 5 minutes: a replay
        signed = timestamp.encode() + b"." + raw_body
        expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), request.headers["X-Inferwatch-Signature"].encode()):
            reject (401)

    (docs/alerting.md, "Verifying a webhook", has this as a function.)

    Use the raw bytes as received (re-serialised JSON will not match) and a constant-time
    comparison. A captured request replayed with a fresh timestamp no longer matches its
    signature, and one replayed as it was is refused as too old; within those 5 minutes, its
    ``notification_id`` (inside the signed body) is one the receiver has seen, so dropping
    repeats defeats that replay too. Every attempt is signed anew, so a retry is never stale.
    """

    kind = "webhook"

    def __init__(self, config: WebhookConfig, *, receiver: str, clock: Clock = _utcnow) -> None:
        if config.secret is not None:  # an empty key signs, but proves nothing: a setup mistake
            _require_secret(config.secret, "secret", receiver, self.kind, exact=False)
        self.config, self.receiver, self.clock = config, receiver, clock
        self._target = _HttpTarget(
            receiver,
            self.kind,
            config.url,
            show_path=False,
            secrets=(_secret(config.secret),),
            clock=clock,
        )

    def send(self, notification: Notification) -> None:
        alerts = deliverable_alerts(self.config, notification)
        if not alerts:
            return
        payload = render_webhook_payload(notification, alerts, max_alerts=self.config.max_alerts)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {NOTIFICATION_ID_HEADER: notification.id}
        if self.config.secret is not None:
            timestamp = str(int(self.clock().timestamp()))
            headers[WEBHOOK_TIMESTAMP_HEADER] = timestamp
            headers[WEBHOOK_SIGNATURE_HEADER] = sign_webhook(timestamp, body, _secret(self.config.secret))
        self._target.post(body, headers, self.config.timeout_s)


# --------------------------------------------------------------------------- email


def parse_smarthost(smarthost: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) to (host, port); raises ValueError naming the problem."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", smarthost.strip())
    if not match:
        raise ValueError(f"smarthost {smarthost!r} must be host:port, e.g. smtp.example.org:587")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"smarthost {smarthost!r}: port {port} is out of range")
    return host, port


def email_message_id(notification: Notification, from_address: str) -> str:
    """``<notification-id@from-domain>``: the same for every attempt, so a mail system (or a
    reader's client) can drop a repeated delivery."""
    domain = from_address.rsplit("@", 1)[1].strip(" >") if "@" in from_address else "inferwatch"
    return f"<{notification.id}@{domain or 'inferwatch'}>"


def _email_alert_lines(alert: NotificationAlert) -> list[str]:
    title = alert.annotations.get("title") or alert.labels.get("alertname", "")
    lines = [f"- [{alert.severity}] {alert.labels.get('subject', alert.incident_id)}: {title}"]
    if alert.annotations.get("summary"):
        lines.append(f"  {alert.annotations['summary']}")
    facts = [f"incident {alert.incident_id}", f"status {alert.incident_status}"]
    facts += [f"{k} {alert.labels[k]}" for k in ("detector", "service", "model") if alert.labels.get(k)]
    facts += [f"count {alert.count}", f"score {alert.score:.2f}", f"since {rfc3339(alert.starts_at)}"]
    if alert.state == "resolved" and alert.ends_at:
        facts.append(f"resolved {rfc3339(alert.ends_at)}")
    lines.append("  " + ", ".join(facts))
    ack = _ack_text(alert)
    if ack:
        lines.append(f"  {ack}")
    return lines


def render_email_text(notification: Notification, alerts: Sequence[NotificationAlert]) -> str:
    """The text/plain body: the title, firing then resolved alerts, and the notification's ids."""
    lines = [notification_title(notification, alerts, parenthesized=True), ""]
    for state in ("firing", "resolved"):
        group = [a for a in alerts if a.state == state]
        if group:
            lines.append(f"{state.capitalize()} ({len(group)}):")
            for alert in group:
                lines += _email_alert_lines(alert)
            lines.append("")
    lines.append(f"notification {notification.id} (seq {notification.seq}), group {notification.group_key}")
    return "\n".join(lines) + "\n"


def render_email_html(notification: Notification, alerts: Sequence[NotificationAlert]) -> str:
    """The text/html alternative: the same content as lists, everything escaped."""
    parts = [f"<h3>{html.escape(notification_title(notification, alerts, parenthesized=True))}</h3>"]
    for state in ("firing", "resolved"):
        group = [a for a in alerts if a.state == state]
        if not group:
            continue
        parts.append(f"<p><b>{state.capitalize()} ({len(group)})</b></p><ul>")
        for alert in group:
            first, *rest = _email_alert_lines(alert)
            details = "".join(f"<br>{html.escape(line.strip())}" for line in rest)
            parts.append(f"<li>{html.escape(first[2:])}{details}</li>")
        parts.append("</ul>")
    parts.append(
        f"<p><small>notification {html.escape(notification.id)} (seq {notification.seq}), "
        f"group {html.escape(notification.group_key)}</small></p>"
    )
    return "<html><body>" + "".join(parts) + "</body></html>"


def render_email(
    notification: Notification, alerts: Sequence[NotificationAlert], config: EmailConfig, *, now: datetime
) -> EmailMessage:
    """The message: Subject as Alertmanager's default title, text and HTML bodies, and a
    Message-ID derived from the notification id."""
    message = EmailMessage()
    message["Subject"] = notification_title(notification, alerts, parenthesized=True)
    message["From"] = config.from_
    message["To"] = ", ".join(config.to)
    message["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC))
    message["Message-ID"] = email_message_id(notification, config.from_)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    message[NOTIFICATION_ID_HEADER] = notification.id
    message.set_content(render_email_text(notification, alerts))
    message.add_alternative(render_email_html(notification, alerts), subtype="html")
    return message


class EmailSender:
    """Email over SMTP: STARTTLS when ``require_tls`` (implicit TLS on port 465), AUTH when a
    username is set. SMTP 4xx answers, connection problems and TLS handshakes cut short are
    retryable; 5xx answers, an untrusted certificate and a server without STARTTLS (when
    ``require_tls``) or AUTH (when a username is set) are not.

    ``ssl_context`` is for tests and private CAs; by default the system's trusted CAs verify
    the server's certificate and host name.
    """

    kind = "email"

    def __init__(
        self,
        config: EmailConfig,
        *,
        receiver: str,
        clock: Clock = _utcnow,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        try:
            self.host, self.port = parse_smarthost(config.smarthost)
        except ValueError as exc:
            raise ValueError(f"receiver {receiver!r} (email): {exc}") from None
        if not config.to or not all(address.strip() for address in config.to):
            raise ValueError(f"receiver {receiver!r} (email): 'to' lists no address, or an empty one")
        if not config.from_.strip():
            raise ValueError(f"receiver {receiver!r} (email): 'from' is empty; set the sender's address")
        for name, value in (("to", ", ".join(config.to)), ("from", config.from_), ("hello", config.hello)):
            if "\r" in value or "\n" in value:
                raise ValueError(f"receiver {receiver!r} (email): {name!r} contains a line break")
        if config.auth_password is not None and not config.auth_username:
            raise ValueError(f"receiver {receiver!r} (email): auth_password needs auth_username")
        self.config, self.receiver, self.clock = config, receiver, clock
        self.ssl_context = ssl_context
        self._secrets = (_secret(config.auth_password),)

    def _error(self, problem: str, *, retryable: bool) -> DeliveryError:
        return _delivery_error(self.receiver, self.kind, _redact(problem, self._secrets), retryable=retryable)

    def send(self, notification: Notification) -> None:
        alerts = deliverable_alerts(self.config, notification)
        if not alerts:
            return
        message = render_email(notification, alerts, self.config, now=self.clock())
        where = f"{self.host}:{self.port}"
        try:
            self._deliver(message)
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused(exc.recipients) from None
        except smtplib.SMTPResponseException as exc:
            raise self._error(
                f"SMTP {exc.smtp_code} from {where}: {_smtp_text(exc.smtp_error)}",
                retryable=400 <= exc.smtp_code < 500,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise self._error(f"{where}: {exc}", retryable=False) from None
        except ssl.SSLCertVerificationError as exc:  # the configuration (or an attack): not retried
            problem = f"TLS with {where} failed: its certificate is not trusted: {exc.verify_message or exc}"
            raise self._error(problem, retryable=False) from None
        except ssl.SSLError as exc:  # a handshake cut short (EOF, reset) is the network: retried
            problem = f"TLS with {where} failed: {type(exc).__name__}: {exc}"
            raise self._error(problem, retryable=True) from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, refused, timeouts
            problem = f"cannot deliver to {where}: {type(exc).__name__}: {exc}"
            raise self._error(problem, retryable=True) from None

    def _deliver(self, message: EmailMessage) -> None:
        context = self.ssl_context or ssl.create_default_context()
        smtp = self._connect(context)
        try:
            refused = self._converse(smtp, context, message)
        except BaseException:
            smtp.close()  # no QUIT on a connection in an unknown state (e.g. a failed TLS handshake)
            raise
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()  # the message is accepted; a failed goodbye changes nothing
        smtp.close()
        if refused:
            raise self._refused(refused)

    def _connect(self, context: ssl.SSLContext) -> smtplib.SMTP:
        config = self.config
        if self.port == 465:  # SMTPS: TLS from the first byte, as Alertmanager does on this port
            return smtplib.SMTP_SSL(
                self.host, self.port, local_hostname=config.hello, timeout=config.timeout_s, context=context
            )
        return smtplib.SMTP(self.host, self.port, local_hostname=config.hello, timeout=config.timeout_s)

    def _converse(
        self, smtp: smtplib.SMTP, context: ssl.SSLContext, message: EmailMessage
    ) -> dict[str, tuple[int, bytes]]:
        """EHLO, STARTTLS, AUTH, then the message; returns the refused recipients."""
        config = self.config
        smtp.ehlo(config.hello)
        if config.require_tls and self.port != 465:
            if not smtp.has_extn("starttls"):
                raise self._error(
                    f"{self.host}:{self.port} does not offer STARTTLS and require_tls is true; "
                    "use a server that does, or set require_tls: false on a trusted network",
                    retryable=False,
                )
            smtp.starttls(context=context)
            smtp.ehlo(config.hello)
        if config.auth_username:
            if not smtp.has_extn("auth"):
                raise self._error(
                    f"{self.host}:{self.port} does not offer SMTP AUTH (after STARTTLS, if any), "
                    "but auth_username is set",
                    retryable=False,
                )
            smtp.login(config.auth_username, _secret(config.auth_password))
        return smtp.send_message(message, from_addr=config.from_, to_addrs=list(config.to))

    def _refused(self, refused: Mapping[str, tuple[int, bytes]]) -> DeliveryError:
        """Some or all recipients refused: retryable only when every refusal is temporary (4xx);
        the others (if any) got it, and get it again on a retry (same Message-ID)."""
        text = "; ".join(f"{rcpt}: {code} {_smtp_text(msg)}" for rcpt, (code, msg) in sorted(refused.items()))
        retryable = all(400 <= code < 500 for code, _ in refused.values())
        return self._error(
            f"{len(refused)} of {len(self.config.to)} recipients refused: {text}", retryable=retryable
        )


def _smtp_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _truncate(" ".join(text.split()), ERROR_BODY_CHARS)

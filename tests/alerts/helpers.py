"""Shared pieces of the receiver tests: the vendors' payload schemas, a schema checker, a local
HTTP receiver that checks what it is sent, and notification factories.

The schemas are transcribed from the vendors' documentation (cited at each one). The project has
no JSON Schema library, so :func:`schema_errors` implements the keywords they use (``type``,
``enum``, ``const``, ``required``, ``properties``, ``additionalProperties``, ``propertyNames``,
``minProperties``, ``items``, ``minItems``, ``minLength``, ``maxLength``, ``pattern``,
``format: date-time|uri``, ``minimum``); ``test_schema_checker_rejects`` shows it rejects what it
must.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from inferwatch.detectors.alerts.model import Notification, NotificationAlert, notification_id

# --------------------------------------------------------------------------- JSON Schema subset

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(instance: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Every way ``instance`` breaks ``schema`` (empty when it conforms)."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](instance) for t in allowed):
            return [f"{path}: {json.dumps(instance)[:80]} is not of type {allowed}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: {instance!r} != {schema['const']!r}")
    if isinstance(instance, str):
        errors += _string_errors(instance, schema, path)
    numeric = isinstance(instance, int | float) and not isinstance(instance, bool)
    if numeric and "minimum" in schema and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} < {schema['minimum']}")
    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, path)
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def _string_errors(value: str, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} ({len(value)})")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    fmt = schema.get("format")
    if fmt == "date-time" and not _RFC3339.fullmatch(value):
        errors.append(f"{path}: {value!r} is not an RFC 3339 date-time")
    if fmt == "uri" and not (urlsplit(value).scheme and urlsplit(value).netloc):
        errors.append(f"{path}: {value!r} is not an absolute URI")
    return errors


def _object_errors(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
    errors = [f"{path}: missing required {key!r}" for key in schema.get("required", []) if key not in value]
    if len(value) < schema.get("minProperties", 0):
        errors.append(f"{path}: fewer than {schema['minProperties']} properties")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if "propertyNames" in schema:
            errors += schema_errors(key, schema["propertyNames"], f"{path}.<name {key!r}>")
        if key in properties:
            errors += schema_errors(item, properties[key], f"{path}.{key}")
        elif extra is False:
            errors.append(f"{path}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            errors += schema_errors(item, extra, f"{path}.{key}")
    return errors


# --------------------------------------------------------------------------- vendor schemas

# Alertmanager API v2 (api/v2/openapi.yaml of Alertmanager 0.25): postableAlerts is an array of
# postableAlert = {startsAt, endsAt: date-time; annotations: labelSet} + alert = {labels:
# labelSet (required), generatorURL: uri}; labelSet = object of strings. The server also
# validates label and annotation names as Prometheus label names (model.LabelName.IsValid),
# which the propertyNames pattern adds.
_LABEL_SET = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "propertyNames": {"pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
}
ALERTMANAGER_POSTABLE_ALERTS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["labels"],
        "properties": {
            "labels": {**_LABEL_SET, "minProperties": 1},
            "annotations": _LABEL_SET,
            "startsAt": {"type": "string", "format": "date-time"},
            "endsAt": {"type": "string", "format": "date-time"},
            "generatorURL": {"type": "string", "format": "uri"},
        },
        "additionalProperties": False,
    },
}

# PagerDuty Events API v2, "Send an alert event" / "Acknowledge" / "Resolve"
# (developer.pagerduty.com/docs/events-api-v2/trigger-events/ and .../acknowledge-events/,
# .../resolve-events/). routing_key is the 32-character integration key.
_ROUTING_KEY = {"type": "string", "minLength": 32, "maxLength": 32}
PAGERDUTY_TRIGGER: dict[str, Any] = {
    "type": "object",
    "required": ["routing_key", "event_action", "payload"],
    "properties": {
        "routing_key": _ROUTING_KEY,
        "event_action": {"const": "trigger"},
        "dedup_key": {"type": "string", "minLength": 1, "maxLength": 255},
        "payload": {
            "type": "object",
            "required": ["summary", "source", "severity"],
            "properties": {
                "summary": {"type": "string", "minLength": 1, "maxLength": 1024},
                "source": {"type": "string", "minLength": 1},
                "severity": {"enum": ["critical", "warning", "error", "info"]},
                "timestamp": {"type": "string", "format": "date-time"},
                "component": {"type": "string"},
                "group": {"type": "string"},
                "class": {"type": "string"},
                "custom_details": {"type": "object"},
            },
            "additionalProperties": False,
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["src"],
                "properties": {
                    "src": {"type": "string"},
                    "href": {"type": "string"},
                    "alt": {"type": "string"},
                },
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["href"],
                "properties": {"href": {"type": "string", "format": "uri"}, "text": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "client": {"type": "string"},
        "client_url": {"type": "string", "format": "uri"},
    },
    "additionalProperties": False,
}
PAGERDUTY_ACK_OR_RESOLVE: dict[str, Any] = {
    "type": "object",
    "required": ["routing_key", "event_action", "dedup_key"],
    "properties": {
        "routing_key": _ROUTING_KEY,
        "event_action": {"enum": ["acknowledge", "resolve"]},
        "dedup_key": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    "additionalProperties": False,
}


def pagerduty_errors(event: Any) -> list[str]:
    """The trigger schema for triggers, the acknowledge/resolve one for the others."""
    action = event.get("event_action") if isinstance(event, dict) else None
    if action not in ("trigger", "acknowledge", "resolve"):
        return [f"$.event_action: {action!r} is not trigger, acknowledge or resolve"]
    return schema_errors(event, PAGERDUTY_TRIGGER if action == "trigger" else PAGERDUTY_ACK_OR_RESOLVE)


# Slack incoming webhooks (api.slack.com/messaging/webhooks, chat.postMessage arguments that
# webhooks honour): text is required unless blocks are given; channel and username are the legacy
# overrides; text over 40,000 characters is truncated by Slack.
SLACK_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 40_000},
        "blocks": {"type": "array", "items": {"type": "object", "required": ["type"]}},
        "channel": {"type": "string", "minLength": 1},
        "username": {"type": "string", "minLength": 1},
        "icon_emoji": {"type": "string"},
        "icon_url": {"type": "string"},
        "mrkdwn": {"type": "boolean"},
    },
    "additionalProperties": False,
}

# Alertmanager's webhook payload (prometheus.io/docs/alerting/latest/configuration/#webhook_config,
# version "4") plus inferwatch's fields (detectors/alerts/receivers.py: render_webhook_payload).
_WEBHOOK_ALERT = {
    "type": "object",
    "required": [
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
        "incident_id",
        "incident_status",
        "actor",
        "note",
    ],
    "properties": {
        "status": {"enum": ["firing", "resolved"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "startsAt": {"type": "string", "format": "date-time"},
        "endsAt": {"type": "string", "format": "date-time"},
        "generatorURL": {"type": "string"},
        "fingerprint": {"type": "string"},
        "incident_id": {"type": "string", "minLength": 1},
        "incident_status": {"enum": ["open", "acknowledged", "resolved"]},
        "updated_at": {"type": "string", "format": "date-time"},
        "actor": {"type": ["string", "null"]},
        "note": {"type": ["string", "null"]},
        "severity": {"type": "string"},
        "score": {"type": "number"},
        "count": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
WEBHOOK_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "required": [
        "version",
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "groupKey",
        "truncatedAlerts",
        "notification_id",
        "seq",
    ],
    "properties": {
        "version": {"const": "4"},
        "receiver": {"type": "string", "minLength": 1},
        "status": {"enum": ["firing", "resolved"]},
        "alerts": {"type": "array", "items": _WEBHOOK_ALERT, "minItems": 1},
        "groupLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "commonAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "externalURL": {"type": "string"},
        "groupKey": {"type": "string"},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "notification_id": {"type": "string", "minLength": 1},
        "seq": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}


# --------------------------------------------------------------------------- local HTTP receiver


@dataclass
class Received:
    """One request the local receiver got, and what it found wrong with it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    errors: list[str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Checker = Callable[[Received], list[str]]


class LocalReceiver:
    """An HTTP server on 127.0.0.1 that plays a vendor's endpoint.

    Each request is parsed as JSON and given to ``checker`` (schema, signature); a request with
    errors is answered 400 with them, as the vendors answer an invalid payload. Otherwise the
    next queued :class:`Reply` answers it (``replies``), else ``default``. ``hold`` makes it not
    answer at all until the test ends (a receiver that hangs).
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.default = Reply(200, b"ok")
        self.checker: Checker = lambda _: []
        self.hold = threading.Event()
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                req = Received("POST", self.path, dict(self.headers.items()), body, [])
                try:
                    json.loads(body)
                except ValueError as exc:
                    req.errors.append(f"body is not JSON: {exc}")
                else:
                    req.errors += owner.checker(req)
                owner.received.append(req)
                if owner.hold.is_set():
                    owner.release.wait(30)
                    return
                if req.errors:
                    reply = Reply(400, json.dumps({"status": "invalid", "errors": req.errors}).encode())
                else:
                    reply = owner.replies.pop(0) if owner.replies else owner.default
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LocalReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.received]


def webhook_signature_errors(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
    max_age_s: float = 300.0,
) -> list[str]:
    """What a receiver finds wrong with a signed request (see WebhookSender's docstring): the
    signature must be HMAC-SHA256 of ``timestamp.body``; with ``now``, the timestamp must also
    be at most ``max_age_s`` away from it (without, tests on a fixed clock need no real time)."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("x-inferwatch-timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit()):
        return [f"X-Inferwatch-Timestamp {timestamp!r} is not Unix seconds"]
    errors = []
    if now is not None and abs(now.timestamp() - int(timestamp)) > max_age_s:
        errors.append(f"X-Inferwatch-Timestamp {timestamp} is more than {max_age_s:.0f} s from now")
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(lower.get("x-inferwatch-signature", "").encode(), expected.encode()):
        errors.append("X-Inferwatch-Signature does not match the timestamp and body")
    return errors


def signature_checker(secret: str | None, *, now: Callable[[], datetime] | None = None) -> Checker:
    """Checks the payload's schema and, with ``secret``, X-Inferwatch-Signature as a receiver
    would (:func:`webhook_signature_errors`; the timestamp's age too when ``now`` is given)."""

    def check(req: Received) -> list[str]:
        errors = schema_errors(json.loads(req.body), WEBHOOK_PAYLOAD)
        if secret is None:
            return errors
        return errors + webhook_signature_errors(
            secret, req.headers, req.body, now=now() if now is not None else None
        )

    return check


# --------------------------------------------------------------------------- factories

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_alert(
    incident_id: str = "inc-1",
    *,
    state: str = "firing",
    incident_status: str = "open",
    severity: str = "high",
    subject: str = "principal:7f3a",
    title: str = "Prompt injection attempts",
    actor: str | None = None,
    note: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
    ends_at: datetime | None = None,
    changed: bool = True,
) -> NotificationAlert:
    """An alert as :func:`alert_from_incident` makes them, for the ``chat`` service;
    ``changed=False`` as the dispatcher marks a firing alert carried along unchanged."""
    labels = {
        "alertname": "prompt_injection",
        "incident_id": incident_id,
        "detector": "prompt_injection",
        "kind": "abuse",
        "severity": severity,
        "service": "chat",
        "model": "gpt-x",
        "subject": subject,
        **(extra_labels or {}),
    }
    if state == "resolved" and ends_at is None:
        ends_at = T0 + timedelta(minutes=30)
    return NotificationAlert.model_validate(
        {
            "incident_id": incident_id,
            "labels": labels,
            "annotations": {"title": title, "summary": f"{title} from {subject}"},
            "state": state,
            "incident_status": incident_status,
            "starts_at": T0,
            "ends_at": ends_at,
            "updated_at": T0 + timedelta(minutes=5),
            "actor": actor,
            "note": note,
            "severity": severity,
            "score": 0.93,
            "count": 4,
            "changed": changed,
        }
    )


def make_notification(
    alerts: list[NotificationAlert],
    *,
    integration: str = "webhook",
    receiver: str = "oncall",
    seq: int = 1,
    group_labels: Mapping[str, str] | None = None,
) -> Notification:
    group = dict(
        group_labels if group_labels is not None else {"alertname": "prompt_injection", "service": "chat"}
    )
    group_key = '{}/{service=~"chat"}:' + json.dumps(group, sort_keys=True)
    stream = f"{group_key}|{receiver}|{integration}|0"
    return Notification.model_validate(
        {
            "id": notification_id(stream, seq),
            "group_key": group_key,
            "group_labels": group,
            "receiver": receiver,
            "integration": integration,
            "seq": seq,
            "created_at": T0 + timedelta(minutes=6),
            "alerts": [a.model_dump() for a in alerts],
            "next_attempt_at": T0 + timedelta(minutes=6),
        }
    )


def free_port() -> int:
    """A port that is free on loopback right now (and so refuses connections)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fixed_clock(moment: datetime = T0 + timedelta(minutes=7)) -> Callable[[], datetime]:
    return lambda: moment

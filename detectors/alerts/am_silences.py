"""inferwatch's silences, mirrored to the Alertmanagers the routing file posts alerts to.

An inferwatch silence stops what inferwatch sends; an alert an Alertmanager already holds keeps
firing there (its ``endsAt`` is a day ahead), and the Alertmanager keeps paging through its own
receivers. So ``inferwatch silence add`` also creates the same silence in every Alertmanager of
the routing file (``POST /api/v2/silences``: the same matchers, times and author, the comment
tagged ``[inferwatch silence ID]``), and ``inferwatch silence expire`` expires the ones so
tagged (``DELETE /api/v2/silence/{id}``). An Alertmanager that cannot be reached is named, with
what to run instead; the inferwatch silence stands either way.

>>> from datetime import UTC, datetime
>>> from inferwatch.detectors.alerts.model import Matcher, Silence
>>> at = datetime(2026, 11, 27, 12, tzinfo=UTC)
>>> silence = Silence(id="3f2a9c0d1e4b", matchers=[Matcher(name="subject", op="=~", value="principal:p_9.*")],
...                   starts_at=at, ends_at=at.replace(hour=14), created_by="alice", comment="key rotated",
...                   created_at=at)
>>> body = silence_body(silence)
>>> body["matchers"]
[{'name': 'subject', 'value': 'principal:p_9.*', 'isRegex': True, 'isEqual': True}]
>>> body["comment"]
'key rotated [inferwatch silence 3f2a9c0d1e4b]'
"""

from __future__ import annotations

import json
from typing import Any

from inferwatch.detectors.alerts.config import AlertingConfig
from inferwatch.detectors.alerts.integrations import AlertmanagerConfig
from inferwatch.detectors.alerts.model import Silence
from inferwatch.detectors.alerts.receivers import DeliveryError, alertmanager_target, label_name, rfc3339

__all__ = ["alertmanagers", "expire_mirrors", "mirror", "silence_body", "tag"]

TIMEOUT_S = 10.0


def tag(silence_id: str) -> str:
    """What marks an Alertmanager silence as this inferwatch silence's copy."""
    return f"[inferwatch silence {silence_id}]"


def alertmanagers(config: AlertingConfig) -> list[tuple[str, AlertmanagerConfig]]:
    """``(receiver, settings)`` of each distinct Alertmanager the routing file posts to."""
    seen: dict[str, tuple[str, AlertmanagerConfig]] = {}
    for receiver in config.receivers:
        for am in receiver.alertmanager_configs:
            seen.setdefault(am.url.rstrip("/"), (receiver.name, am))
    return list(seen.values())


def silence_body(silence: Silence) -> dict[str, Any]:
    """The silence as Alertmanager's API v2 takes it (label names as inferwatch posts them)."""
    return {
        "matchers": [{"name": label_name(m.name), "value": m.value, "isRegex": m.op in ("=~", "!~"),
                      "isEqual": m.op in ("=", "=~")} for m in silence.matchers],
        "startsAt": rfc3339(silence.starts_at),
        "endsAt": rfc3339(silence.ends_at),
        "createdBy": f"inferwatch ({silence.created_by})",
        "comment": f"{silence.comment} {tag(silence.id)}".strip(),
    }


def mirror(silence: Silence, config: AlertingConfig) -> tuple[list[str], list[str]]:
    """Create ``silence`` in each Alertmanager; ``(where it was created, problems)``."""
    done: list[str] = []
    problems: list[str] = []
    body = json.dumps(silence_body(silence)).encode()
    for receiver, am in alertmanagers(config):
        headers, target = alertmanager_target(am, receiver, "/api/v2/silences")
        try:
            target.post(body, headers, min(am.timeout_s, TIMEOUT_S))
        except DeliveryError as exc:
            problems.append(str(exc))
        else:
            done.append(target.where.removesuffix("/api/v2/silences"))
    return done, problems


def expire_mirrors(silence_id: str, config: AlertingConfig) -> tuple[int, list[str]]:
    """Expire the Alertmanager silences tagged as ``silence_id``'s copies that are still in force
    or waiting to start; ``(how many, problems)``."""
    expired = 0
    problems: list[str] = []
    for receiver, am in alertmanagers(config):
        headers, target = alertmanager_target(am, receiver, "/api/v2/silence")
        timeout = min(am.timeout_s, TIMEOUT_S)
        try:
            _, raw = target.request("GET", None, headers, timeout, suffix="s")
            listed = json.loads(raw or b"[]")
            for found in listed if isinstance(listed, list) else []:
                state = (found.get("status") or {}).get("state")
                if tag(silence_id) in str(found.get("comment", "")) and state in ("active", "pending"):
                    target.request("DELETE", None, headers, timeout, suffix=f"/{found['id']}")
                    expired += 1
        except DeliveryError as exc:
            problems.append(str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"receiver {receiver!r} (alertmanager): unexpected answer listing silences "
                            f"({type(exc).__name__})")
    return expired, problems

"""How incidents, events, drift references, silences and notifications look in Elasticsearch:
names, templates, documents, queries.

Pure data and functions, no I/O; :mod:`inferwatch.detectors.es_store` sends them. Each document
carries the inferwatch record exactly as it was, in an object Elasticsearch stores but does not
parse (``inferwatch.incident`` / ``inferwatch.event``, ``enabled: false``): free-form evidence,
features and attributes can neither grow the mapping nor get a document refused (a feature
named ``""`` or ``"a..b"`` would be, even under ``dynamic: false``; callers choose feature
names). Beside it are the Elastic Common Schema fields that have a home in ECS (``@timestamp``,
``event.*``, ``rule.*``, ``service.name``, ``user.id``, ``trace.id``, ``gen_ai.*``, …) and a
few ``inferwatch.*`` fields for the rest. The store filters on these, so a Kibana filter and
``inferwatch incidents list`` read the same fields.

Two fields exist only to answer the store's questions exactly as the SQLite store does:

- ``inferwatch.*_us``: times as integer microseconds, beside a ``date`` for people. ``date``
  keeps milliseconds, and ``date_nanos`` refuses times before 1970, which one bad event must
  not be able to turn into a write that fails for ever.
- ``inferwatch.terms``: the searchable text as the words SQLite's FTS5 ``unicode61`` tokenizer
  sees (:func:`search_terms`), indexed with the built-in ``whitespace`` analyzer. The analysis
  plug-ins a custom analyzer would need are not on every cluster, and doing it here gives
  the same words on both stores.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from inferwatch.collectors.durations import parse_duration
from inferwatch.collectors.event import InferenceEvent, event_to_dict
from inferwatch.detectors.alerts.model import Lease, Notification, NotificationQuery, Silence
from inferwatch.detectors.base import SEVERITY_ORDER
from inferwatch.detectors.drift.reference import ReferenceRecord
from inferwatch.detectors.incidents import Incident
from inferwatch.detectors.store import EventQuery, IncidentQuery, canonical_ip, is_ip_address

TEMPLATE_PRIORITY = 200  # above the stack's built-in templates (100)
PAGE_SIZE = 1000

_KEYWORD = {"type": "keyword", "ignore_above": 8191}  # under Lucene's 32 kB term limit
_LONG = {"type": "long"}
_DATE = {"type": "date"}
_TEXT = {"type": "text"}
_TERMS = {"type": "text", "analyzer": "whitespace", "norms": False}
_INTEGER = {"type": "integer"}
# Any label names (dots, empty) and values, without growing the mapping.
_LABELS = {"type": "flattened", "ignore_above": 8191}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class IndexNames:
    """Everything the store creates, all named under one prefix."""

    prefix: str

    @property
    def events(self) -> str:
        """The events data stream (also the name of its index template and ILM policy)."""
        return f"{self.prefix}-events"

    @property
    def incidents(self) -> str:
        """The incidents alias; reads and writes go through it."""
        return f"{self.prefix}-incidents"

    @property
    def incidents_first_index(self) -> str:
        """The first concrete incidents index, the alias's write index until a rollover."""
        return f"{self.prefix}-incidents-000001"

    @property
    def incidents_pattern(self) -> str:
        """What the incidents index template matches."""
        return f"{self.prefix}-incidents-*"

    @property
    def references(self) -> str:
        """The drift references index (also the name of its index template): one document per model."""
        return f"{self.prefix}-drift-references"

    @property
    def checkpoints(self) -> str:
        """The checkpoints index (also its template's name): the detector service's state, one
        document per consumer group and set of partitions."""
        return f"{self.prefix}-checkpoints"

    @property
    def silences(self) -> str:
        """The silences index (also the name of its index template): one document per silence."""
        return f"{self.prefix}-silences"

    @property
    def notifications(self) -> str:
        """The notifications index (also its template's name): the outbox and the notification log."""
        return f"{self.prefix}-notifications"

    @property
    def leases(self) -> str:
        """The leases index (also its template's name): which notifier pages for this store."""
        return f"{self.prefix}-leases"

    def custom(self, template: str) -> str:
        """The optional component template operators may add for their own settings."""
        return f"{template}@custom"


# -- templates --------------------------------------------------------------------------------

_OPAQUE = {"type": "object", "enabled": False}

EVENT_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    # Derived from the event's text, which _source already holds: indexed, not stored again.
    "_source": {"excludes": ["inferwatch.terms", "inferwatch.text"]},
    "properties": {
        "@timestamp": _DATE,
        "event": {"properties": {"id": _KEYWORD, "kind": _KEYWORD, "module": _KEYWORD,
                                 "dataset": _KEYWORD, "duration": _LONG, "outcome": _KEYWORD}},
        "service": {"properties": {"name": _KEYWORD}},
        "user": {"properties": {"id": _KEYWORD}},
        "client": {"properties": {"ip": {"type": "ip", "ignore_malformed": True}}},
        "trace": {"properties": {"id": _KEYWORD}},
        "span": {"properties": {"id": _KEYWORD}},
        "url": {"properties": {"path": _KEYWORD}},
        "http": {"properties": {"response": {"properties": {"status_code": _LONG}}}},
        "error": {"properties": {"type": _KEYWORD}},
        "gen_ai": {"properties": {
            "operation": {"properties": {"name": _KEYWORD}},
            "request": {"properties": {"model": _KEYWORD}},
            "response": {"properties": {"finish_reasons": _KEYWORD}},
            "usage": {"properties": {"input_tokens": _LONG, "output_tokens": _LONG}},
        }},
        "inferwatch": {"properties": {
            "time_us": _LONG,
            "terms": _TERMS,
            "text": {"properties": {"input": _TEXT, "output": _TEXT}},
            "event": _OPAQUE,
        }},
    },
}

INCIDENT_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "message": _TEXT,
        "event": {"properties": {
            "id": _KEYWORD, "kind": _KEYWORD, "module": _KEYWORD, "dataset": _KEYWORD,
            "severity": _LONG, "risk_score": {"type": "float"}, "risk_score_norm": {"type": "float"},
            "start": _DATE, "end": _DATE,
        }},
        "rule": {"properties": {"name": _KEYWORD, "category": _KEYWORD, "ruleset": _KEYWORD}},
        "service": {"properties": {"name": _KEYWORD}},
        "labels": _LABELS,  # ECS custom key/value pairs: the incident's routing labels
        "inferwatch": {"properties": {
            "status": _KEYWORD, "subject": _KEYWORD, "model": _KEYWORD, "fingerprint": _KEYWORD,
            "severity": _KEYWORD, "count": _LONG, "summary": _TEXT,
            "last_seen_us": _LONG,
            "updated_at": _DATE, "updated_at_us": _LONG,
            "terms": _TERMS,
            "incident": _OPAQUE,
        }},
    },
}


# One document per model, ``_id`` = the model name. The summary (samples and counts of every
# feature, tens of kilobytes to megabytes) is kept in the opaque record, never indexed.
CHECKPOINT_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "inferwatch": {"properties": {"key": _KEYWORD, "bytes": _LONG, "data": {"type": "binary"}}},
    },
}


LEASE_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "inferwatch": {"properties": {"lease": _KEYWORD, "holder": _KEYWORD, "expires_at": _DATE}},
    },
}


REFERENCE_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "inferwatch": {"properties": {
            "model": _KEYWORD, "model_version": _KEYWORD, "source": _KEYWORD, "origin": _KEYWORD,
            "events": _LONG,
            "reference": _OPAQUE,
        }},
    },
}


# One document per silence, ``_id`` = its id; the silence itself in the opaque record.
SILENCE_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "id": _KEYWORD, "created_by": _KEYWORD, "comment": _TEXT, "matchers": _KEYWORD,
        "created_at": _DATE, "starts_at": _DATE, "ends_at": _DATE,
        "inferwatch": {"properties": {"created_at_us": _LONG, "ends_at_us": _LONG, "silence": _OPAQUE}},
    },
}

# One document per notification, ``_id`` = its id. ``stream_id`` (a hash of ``stream``) is what
# the latest-per-stream query collapses on: a keyword longer than ``ignore_above`` has no value
# to collapse on, and a stream's group key may be long.
NOTIFICATION_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "id": _KEYWORD, "stream": _KEYWORD, "stream_id": _KEYWORD, "group_key": _KEYWORD,
        "receiver": _KEYWORD, "integration": _KEYWORD, "integration_index": _INTEGER, "seq": _INTEGER,
        "status": _KEYWORD, "attempts": _INTEGER,
        "created_at": _DATE, "next_attempt_at": _DATE, "delivered_at": _DATE,
        "alerts": {"properties": {"incident_id": _KEYWORD}},
        "inferwatch": {"properties": {
            "created_at_us": _LONG, "next_attempt_at_us": _LONG, "notification": _OPAQUE,
        }},
    },
}


def events_template(names: IndexNames, retention: str, *, ilm: bool) -> dict[str, Any]:
    """The index template behind the events data stream.

    Retention is the data stream lifecycle's ``data_retention`` (Elasticsearch 8.11+, no
    x-pack needed), or, with ``ilm``, the ILM policy named like the stream.
    """
    template: dict[str, Any] = {"mappings": EVENT_MAPPINGS}
    if ilm:
        template["settings"] = {"index.lifecycle.name": names.events}
    else:
        template["lifecycle"] = {"data_retention": retention}
    return _index_template(names, names.events, [names.events], template, data_stream=True)


def incidents_template(names: IndexNames) -> dict[str, Any]:
    """The index template for ``{prefix}-incidents-*``, so a rolled-over index maps alike."""
    return _index_template(names, names.incidents, [names.incidents_pattern],
                           {"mappings": INCIDENT_MAPPINGS}, data_stream=False)


def references_template(names: IndexNames) -> dict[str, Any]:
    """The index template for the drift references index."""
    return _index_template(names, names.references, [names.references],
                           {"mappings": REFERENCE_MAPPINGS}, data_stream=False)


def checkpoints_template(names: IndexNames) -> dict[str, Any]:
    """The index template for the checkpoints index."""
    return _index_template(names, names.checkpoints, [names.checkpoints],
                           {"mappings": CHECKPOINT_MAPPINGS}, data_stream=False)


def silences_template(names: IndexNames) -> dict[str, Any]:
    """The index template for the silences index."""
    return _index_template(names, names.silences, [names.silences],
                           {"mappings": SILENCE_MAPPINGS}, data_stream=False)


def leases_template(names: IndexNames) -> dict[str, Any]:
    """The index template for the leases index."""
    return _index_template(names, names.leases, [names.leases], {"mappings": LEASE_MAPPINGS},
                           data_stream=False)


def notifications_template(names: IndexNames) -> dict[str, Any]:
    """The index template for the notifications index."""
    return _index_template(names, names.notifications, [names.notifications],
                           {"mappings": NOTIFICATION_MAPPINGS}, data_stream=False)


def _index_template(
    names: IndexNames, name: str, patterns: list[str], template: dict[str, Any], *, data_stream: bool
) -> dict[str, Any]:
    custom = names.custom(name)
    body: dict[str, Any] = {
        "index_patterns": patterns,
        "priority": TEMPLATE_PRIORITY,
        "composed_of": [custom],
        "ignore_missing_component_templates": [custom],
        "template": template,
        "_meta": {"managed_by": "inferwatch"},
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def events_ilm_policy(retention: str) -> dict[str, Any]:
    """Roll the events over daily (sooner if retention is shorter) and delete after retention."""
    max_age = retention if parse_duration(retention) < 86_400 else "1d"
    return {"phases": {
        "hot": {"actions": {"rollover": {"max_age": max_age, "max_primary_shard_size": "50gb"}}},
        "delete": {"min_age": retention, "actions": {"delete": {}}},
    }}


# -- documents --------------------------------------------------------------------------------


def incident_document(incident: Incident) -> dict[str, Any]:
    """An incident as an ECS alert, with the incident itself under ``inferwatch.incident``."""
    doc: dict[str, Any] = {
        "@timestamp": timestamp(incident.last_seen),
        "message": incident.title,
        "event": {
            "id": incident.id,
            "kind": "alert",
            "module": "inferwatch",
            "dataset": "inferwatch.incident",
            "severity": SEVERITY_ORDER[incident.severity],
            "risk_score": incident.score,
            "risk_score_norm": round(incident.score * 100, 3),
            "start": timestamp(incident.first_seen),
            "end": timestamp(incident.last_seen),
        },
        "rule": {"name": incident.detector, "category": incident.kind, "ruleset": "inferwatch"},
        "inferwatch": {
            "status": incident.status, "subject": incident.subject, "fingerprint": incident.fingerprint,
            "severity": incident.severity, "count": incident.count, "summary": incident.summary,
            "last_seen_us": micros(incident.last_seen),
            "terms": search_terms(incident_text(incident)),
            "incident": incident.model_dump(mode="json"),
        },
    }
    if incident.service is not None:
        doc["service"] = {"name": incident.service}
    if incident.model is not None:
        doc["inferwatch"]["model"] = incident.model
    if incident.labels:
        doc["labels"] = dict(incident.labels)
    if incident.updated_at is not None:
        doc["inferwatch"]["updated_at"] = timestamp(incident.updated_at)
        doc["inferwatch"]["updated_at_us"] = micros(incident.updated_at)
    return doc


def incident_from_source(source: dict[str, Any]) -> Incident:
    """The incident stored in a document's ``_source``, exactly as it was written."""
    return Incident.model_validate(source["inferwatch"]["incident"])


def event_document(event: InferenceEvent) -> dict[str, Any]:
    """An inference event with its ECS fields, the event itself under ``inferwatch.event``."""
    ecs_event: dict[str, Any] = {
        "id": event.id, "kind": "event", "module": "inferwatch", "dataset": "inferwatch.inference",
    }
    _put(ecs_event, ("duration",), _long(event.duration_ms * 1_000_000))
    if event.status is not None:
        ecs_event["outcome"] = "failure" if event.status >= 400 or event.error else "success"
    doc: dict[str, Any] = {
        "@timestamp": timestamp(event.time),
        "event": ecs_event,
        "service": {"name": event.service},
        "inferwatch": {"time_us": micros(event.time), "event": event_to_dict(event)},
    }
    terms = search_terms(event_text(event))
    if terms:
        doc["inferwatch"]["terms"] = terms
    for path, value in (
        (("inferwatch", "text", "input"), event.input.text),
        (("inferwatch", "text", "output"), event.output.text),
        (("user", "id"), event.principal),
        (("client", "ip"), event.client_ip and canonical_ip(event.client_ip)),  # the event keeps it as given
        (("trace", "id"), event.trace_id),
        (("span", "id"), event.span_id),
        (("url", "path"), event.endpoint),
        (("http", "response", "status_code"), _long(event.status)),
        (("error", "type"), event.error),
        (("gen_ai", "operation", "name"), event.operation),
        (("gen_ai", "request", "model"), event.model),
        (("gen_ai", "response", "finish_reasons"),
         [event.output.finish_reason] if event.output.finish_reason else None),
        (("gen_ai", "usage", "input_tokens"), _long(event.input.tokens)),
        (("gen_ai", "usage", "output_tokens"), _long(event.output.tokens)),
    ):
        _put(doc, path, value)
    return doc


def event_from_source(source: dict[str, Any]) -> InferenceEvent:
    """The event stored in a document's ``_source``, exactly as it was written."""
    return InferenceEvent.model_validate(source["inferwatch"]["event"])


def reference_document(record: ReferenceRecord) -> dict[str, Any]:
    """A drift reference, its record as it was under ``inferwatch.reference`` (stored, not indexed)."""
    inferwatch: dict[str, Any] = {
        "model": record.model, "source": record.source, "origin": record.origin, "events": record.events,
        "reference": record.model_dump(mode="json"),
    }
    _put(inferwatch, ("model_version",), record.model_version)
    return {"@timestamp": timestamp(record.created), "inferwatch": inferwatch}


def reference_from_source(source: dict[str, Any]) -> ReferenceRecord:
    """The drift reference stored in a document's ``_source``, exactly as it was written."""
    return ReferenceRecord.model_validate(source["inferwatch"]["reference"])


def silence_document(silence: Silence) -> dict[str, Any]:
    """A silence, its record as it was under ``inferwatch.silence`` (stored, not indexed)."""
    return {
        "@timestamp": timestamp(silence.created_at),
        "id": silence.id, "created_by": silence.created_by, "comment": silence.comment,
        "matchers": [str(m) for m in silence.matchers],
        "created_at": timestamp(silence.created_at), "starts_at": timestamp(silence.starts_at),
        "ends_at": timestamp(silence.ends_at),
        "inferwatch": {"created_at_us": micros(silence.created_at), "ends_at_us": micros(silence.ends_at),
                       "silence": silence.model_dump(mode="json")},
    }


def silence_from_source(source: dict[str, Any]) -> Silence:
    """The silence stored in a document's ``_source``, exactly as it was written."""
    return Silence.model_validate(source["inferwatch"]["silence"])


def notification_document(n: Notification) -> dict[str, Any]:
    """A notification, its record as it was under ``inferwatch.notification`` (stored, not indexed)."""
    doc: dict[str, Any] = {
        "@timestamp": timestamp(n.created_at),
        "id": n.id, "stream": n.stream, "stream_id": stream_id(n.stream), "group_key": n.group_key,
        "receiver": n.receiver, "integration": n.integration, "integration_index": n.integration_index,
        "seq": n.seq, "status": n.status, "attempts": n.attempts,
        "created_at": timestamp(n.created_at), "next_attempt_at": timestamp(n.next_attempt_at),
        "alerts": {"incident_id": sorted({a.incident_id for a in n.alerts})},
        "inferwatch": {"created_at_us": micros(n.created_at), "next_attempt_at_us": micros(n.next_attempt_at),
                       "notification": n.model_dump(mode="json")},
    }
    if n.delivered_at is not None:
        doc["delivered_at"] = timestamp(n.delivered_at)
    return doc


def notification_from_source(source: dict[str, Any]) -> Notification:
    """The notification stored in a document's ``_source``, exactly as it was written."""
    return Notification.model_validate(source["inferwatch"]["notification"])


def stream_id(stream: str) -> str:
    """A short, fixed-length stand-in for a notification stream, to collapse on."""
    return hashlib.blake2b(stream.encode(), digest_size=16).hexdigest()


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    if value is None:
        return
    for key in path[:-1]:
        doc = doc.setdefault(key, {})
    doc[path[-1]] = value


def _long(value: float | None) -> int | None:
    # A value a long cannot hold would get the whole document refused: leave the field out
    # (the event itself keeps it).
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(value) if -(2**63) <= value < 2**63 else None


def lease_document(lease: Lease) -> dict[str, Any]:
    """The leases index document of ``lease`` (``_id`` = its name)."""
    until = timestamp(lease.expires_at)
    return {"@timestamp": until,
            "inferwatch": {"lease": lease.name, "holder": lease.holder, "expires_at": until}}


def lease_from_source(name: str, source: Mapping[str, Any]) -> Lease:
    """The :class:`Lease` a leases index document holds."""
    fields = source["inferwatch"]
    return Lease(name=name, holder=fields["holder"], expires_at=fields["expires_at"])


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with microseconds; a naive time is local time, as ``timestamp()`` reads it."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def micros(when: datetime) -> int:
    """Microseconds since the epoch, exact (a naive time is local time, as in the SQLite store)."""
    return (when.astimezone(UTC) - _EPOCH) // _MICROSECOND


# -- queries --------------------------------------------------------------------------------

INCIDENT_SORT = [{"inferwatch.last_seen_us": "desc"}, {"event.id": "asc"}]  # last_seen DESC, id
EVENT_SORT = [{"inferwatch.time_us": "desc"}, {"event.id": "desc"}]  # ts DESC, id DESC
REFERENCE_SORT = [{"inferwatch.model": "asc"}]  # ORDER BY model
SILENCE_SORT = [{"inferwatch.created_at_us": "desc"}, {"id": "asc"}]  # created_at DESC, id
# The log: created_at DESC, seq DESC, id; the outbox: created_at, seq, id.
NOTIFICATION_LOG_SORT = [{"inferwatch.created_at_us": "desc"}, {"seq": "desc"}, {"id": "asc"}]
NOTIFICATION_DUE_SORT = [{"inferwatch.created_at_us": "asc"}, {"seq": "asc"}, {"id": "asc"}]
# One hit per stream, paged by ``search_after`` on the collapse field (the only sort allowed with
# it); the stream's highest ``seq`` (lowest id on a tie) comes as its inner hit.
LATEST_PER_STREAM_SORT = [{"stream_id": "asc"}]
LATEST_PER_STREAM = {"field": "stream_id", "inner_hits": {
    "name": "latest", "size": 1, "sort": [{"seq": "desc"}, {"id": "asc"}], "_source": True}}
_MATCH_NONE: dict[str, Any] = {"match_none": {}}


def incident_query(q: IncidentQuery) -> dict[str, Any]:
    """The Elasticsearch query for ``q``, filter for filter as the SQLite store reads it."""
    filters: list[dict[str, Any]] = []
    if q.status:
        filters.append({"terms": {"inferwatch.status": list(q.status)}})
    if q.min_severity:
        filters.append({"range": {"event.severity": {"gte": SEVERITY_ORDER[q.min_severity]}}})
    for field, value in (("rule.category", q.kind), ("rule.name", q.detector), ("service.name", q.service),
                         ("inferwatch.model", q.model), ("inferwatch.subject", q.subject)):
        if value is not None:
            filters.append({"term": {field: value}})
    if q.since is not None:
        filters.append({"range": {"inferwatch.last_seen_us": {"gte": micros(q.since)}}})
    if q.updated_since is not None:  # an incident without updated_at has no value: never matches
        filters.append({"range": {"inferwatch.updated_at_us": {"gte": micros(q.updated_since)}}})
    if q.last_seen_before is not None:
        filters.append({"range": {"inferwatch.last_seen_us": {"lt": micros(q.last_seen_before)}}})
    if q.text:
        filters.append(text_query(q.text))
    return bool_filter(filters)


def silence_query(*, include_expired: bool, now: datetime) -> dict[str, Any]:
    """Every silence, or (as the SQLite store reads it) those not yet ended at ``now``."""
    if include_expired:
        return {"match_all": {}}
    return bool_filter([{"range": {"inferwatch.ends_at_us": {"gt": micros(now)}}}])


def old_notifications_query(before: datetime) -> dict[str, Any]:
    """Notifications created before ``before`` and no longer pending."""
    query = bool_filter([{"range": {"inferwatch.created_at_us": {"lt": micros(before)}}}])
    query["bool"]["must_not"] = [{"term": {"status": "pending"}}]
    return query


def ended_silences_query(before: datetime) -> dict[str, Any]:
    """Silences that ended before ``before``."""
    return bool_filter([{"range": {"inferwatch.ends_at_us": {"lt": micros(before)}}}])


def due_query(now: datetime) -> dict[str, Any]:
    """Pending notifications whose next attempt is at or before ``now``."""
    return bool_filter([{"term": {"status": "pending"}},
                        {"range": {"inferwatch.next_attempt_at_us": {"lte": micros(now)}}}])


def notification_query(q: NotificationQuery) -> dict[str, Any]:
    """The Elasticsearch query for ``q``, filter for filter as the SQLite store reads it."""
    filters: list[dict[str, Any]] = []
    if q.status:
        filters.append({"terms": {"status": list(q.status)}})
    if q.receiver is not None:
        filters.append({"term": {"receiver": q.receiver}})
    if q.incident_id is not None:
        filters.append({"term": {"alerts.incident_id": q.incident_id}})
    if q.stream is not None:
        filters.append({"term": {"stream_id": stream_id(q.stream)}})
    if q.since is not None:
        filters.append({"range": {"inferwatch.created_at_us": {"gte": micros(q.since)}}})
    return bool_filter(filters)


def event_query(q: EventQuery) -> dict[str, Any]:
    """The Elasticsearch query for ``q``, filter for filter as the SQLite store reads it."""
    filters: list[dict[str, Any]] = []
    for field, value in (("user.id", q.principal), ("gen_ai.request.model", q.model),
                         ("service.name", q.service), ("trace.id", q.trace_id)):
        if value is not None:
            filters.append({"term": {field: value}})
    if q.client_ip is not None:  # client.ip holds addresses only (ignore_malformed): others match none
        filters.append({"term": {"client.ip": canonical_ip(q.client_ip)}} if is_ip_address(q.client_ip)
                       else _MATCH_NONE)
    if q.status is not None:
        filters.append({"range": {"http.response.status_code": {"gte": q.status[0], "lte": q.status[1]}}})
    window: dict[str, int] = {}
    if q.since is not None:
        window["gte"] = micros(q.since)
    if q.until is not None:
        window["lt"] = micros(q.until)
    if window:
        filters.append({"range": {"inferwatch.time_us": window}})
    if q.text:
        filters.append(text_query(q.text))
    if q.ids is not None:
        filters.append({"terms": {"event.id": list(q.ids)}} if q.ids else _MATCH_NONE)
    return bool_filter(filters)


def text_query(text: str) -> dict[str, Any]:
    """Every whitespace-separated word of ``text`` must occur, its own words side by side.

    The FTS5 query the SQLite store runs (one quoted phrase per word); a word with nothing
    searchable in it (``-``) is ignored, and text with no searchable word matches nothing.
    """
    phrases = [" ".join(words) for words in map(search_words, text.split()) if words]
    if not phrases:
        return _MATCH_NONE
    return bool_filter([{"match_phrase": {"inferwatch.terms": phrase}} for phrase in phrases])


def bool_filter(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """All of ``filters``, without scoring."""
    return {"bool": {"filter": filters}}


# -- search text ------------------------------------------------------------------------------
# The same text the SQLite store puts in its FTS5 tables.


def incident_text(incident: Incident) -> str:
    """The text an incident is found by: title, summary, subject, detector, model, service."""
    parts = (incident.title, incident.summary, incident.subject, incident.detector, incident.model,
             incident.service)
    return " ".join(p for p in parts if p)


def event_text(event: InferenceEvent) -> str:
    """The text an event is found by: its (redacted) input and output text."""
    return "\n".join(p for p in (event.input.text, event.output.text) if p)


# FTS5's unicode61 tokenizer (the SQLite default, remove_diacritics=1): letters, digits and
# private-use characters make words; these combining marks are removed inside a word; case is
# folded and a Latin letter with one of those marks becomes its ASCII base letter.
_REMOVED_MARKS = "".join(chr(c) for c in (
    0x300, 0x301, 0x302, 0x303, 0x304, 0x306, 0x307, 0x308, 0x309, 0x30A, 0x30B, 0x30C, 0x30F,
    0x311, 0x31B, 0x323, 0x324, 0x325, 0x326, 0x327, 0x328, 0x32D, 0x32E, 0x330, 0x331,
))
_WORD = re.compile(
    rf"(?:[^\W_]|[\uE000-\uF8FF\U000F0000-\U000FFFFD\U00100000-\U0010FFFD{_REMOVED_MARKS}])+"
)
_STRIP_MARKS = str.maketrans("", "", _REMOVED_MARKS)
_MAX_TERM = 100  # the whitespace analyzer splits terms over 255 UTF-16 units; FTS5 does not


def search_words(text: str) -> list[str]:
    """The words FTS5's ``unicode61`` tokenizer finds in ``text``, case- and accent-folded.

    >>> search_words("Ignore previous-instructions, CAFÉ déjà_vu!")
    ['ignore', 'previous', 'instructions', 'cafe', 'deja', 'vu']
    """
    words = []
    for match in _WORD.finditer(text):
        word = match.group()
        word = word.lower() if word.isascii() else "".join(map(_fold, word)).translate(_STRIP_MARKS)
        if word:
            words.append(word if len(word) <= _MAX_TERM else _long_term(word))
    return words


def search_terms(text: str) -> str:
    """``text`` as the space-separated words of :func:`search_words`, ready to index."""
    return " ".join(search_words(text))


@lru_cache(maxsize=4096)
def _fold(ch: str) -> str:
    folded = ch.casefold()
    if len(folded) != 1:  # FTS5 keeps ß, ligatures and the like as they are
        folded = ch.lower()[0]
    decomposed = unicodedata.normalize("NFD", folded)
    if len(decomposed) == 2 and decomposed[0].isascii() and decomposed[1] in _REMOVED_MARKS:
        return decomposed[0]
    return folded


def _long_term(word: str) -> str:
    # One exact term stands for a long word (a key, a base64 blob), so that it matches whole,
    # as in FTS5, rather than as 255-character pieces.
    return "h" + hashlib.blake2b(word.encode(), digest_size=16).hexdigest()

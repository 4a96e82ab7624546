"""The distributed store: incidents, events, drift references and alerting state in Elasticsearch 8.

Incidents live in ``{prefix}-incidents-000001`` behind the alias ``{prefix}-incidents``;
events in the data stream ``{prefix}-events``, whose retention is the data stream lifecycle
(or ILM, when asked for and the cluster has it); drift references in ``{prefix}-drift-references``,
one document per model; silences in ``{prefix}-silences`` and the notification outbox and log
in ``{prefix}-notifications``, one document per silence or notification.
:meth:`ElasticsearchStore.setup` creates them, brings the mappings of indices made by an older
inferwatch up to date, and can run any number of times. Documents follow the Elastic Common
Schema where it has a field (see :mod:`inferwatch.detectors.es_mappings` and ``docs/elasticsearch.md``).

The store answers every :class:`~inferwatch.detectors.store.IncidentQuery` and
:class:`~inferwatch.detectors.store.EventQuery` as the SQLite store does: the same filters,
the same order, the same words for text search; so are the alerting questions of
:class:`~inferwatch.detectors.alerts.model.AlertStore`. Incident, silence and notification writes
are searchable when they return (the incident manager and the notifier read their own writes);
events become searchable within the index refresh interval (one second by default).

Example::

    store = ElasticsearchStore(StoreSettings(kind="elasticsearch", urls=["https://es:9200"],
                                             api_key=SecretStr("...")))
    store.setup()
    store.list_incidents(IncidentQuery(status=["open"], min_severity="high"))
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from elasticsearch import ApiError, Elasticsearch, TransportError
from elasticsearch.helpers import streaming_bulk

from inferwatch.collectors.event import InferenceEvent
from inferwatch.collectors.settings import SettingsError, StoreSettings
from inferwatch.detectors.alerts.model import Lease, Notification, NotificationQuery, Silence
from inferwatch.detectors.drift.reference import ReferenceRecord
from inferwatch.detectors.es_mappings import (
    EVENT_SORT,
    INCIDENT_MAPPINGS,
    INCIDENT_SORT,
    LATEST_PER_STREAM,
    LATEST_PER_STREAM_SORT,
    NOTIFICATION_DUE_SORT,
    NOTIFICATION_LOG_SORT,
    PAGE_SIZE,
    REFERENCE_SORT,
    SILENCE_SORT,
    IndexNames,
    bool_filter,
    checkpoints_template,
    due_query,
    ended_silences_query,
    event_document,
    event_from_source,
    event_query,
    events_ilm_policy,
    events_template,
    incident_document,
    incident_from_source,
    incident_query,
    incidents_template,
    lease_document,
    lease_from_source,
    leases_template,
    notification_document,
    notification_from_source,
    notification_query,
    notifications_template,
    old_notifications_query,
    reference_document,
    reference_from_source,
    references_template,
    silence_document,
    silence_from_source,
    silence_query,
    silences_template,
    stream_id,
    timestamp,
)
from inferwatch.detectors.incidents import (
    ACTIVE,
    AMBIGUOUS_SHOWN,
    ID_LENGTH,
    MIN_ID_PREFIX,
    Incident,
    ambiguous_prefix,
)
from inferwatch.detectors.store import EventQuery, IncidentQuery, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class ElasticsearchSetupError(SettingsError):
    """The cluster refused to set up the store, or lacks what the settings ask for."""


def build_client(settings: StoreSettings) -> Elasticsearch:
    """The Elasticsearch client for ``settings``: URLs, API key or basic auth, CA, timeouts."""
    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout_s,
        "retry_on_timeout": True,
        "max_retries": 2,
        "verify_certs": settings.verify_certs,
    }
    if settings.ca_certs is not None:
        options["ca_certs"] = str(settings.ca_certs)
    if settings.api_key is not None and settings.username is not None:
        raise SettingsError(
            "set INFERWATCH_STORE__API_KEY or INFERWATCH_STORE__USERNAME/PASSWORD, not both"
        )
    if settings.api_key is not None:
        options["api_key"] = settings.api_key.get_secret_value()
    elif settings.username is not None:
        if settings.password is None:
            raise SettingsError("INFERWATCH_STORE__USERNAME needs INFERWATCH_STORE__PASSWORD")
        options["basic_auth"] = (settings.username, settings.password.get_secret_value())
    try:
        return Elasticsearch(list(settings.urls), **options)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            f"INFERWATCH_STORE__URLS (or the TLS settings beside it) cannot be used: {exc}"
        ) from None


def redacted_urls(urls: Iterable[str]) -> str:
    """The URLs for messages and logs, without any user or password written into them."""
    shown = []
    for url in urls:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        shown.append(urlunsplit(parts._replace(netloc=host)) if parts.netloc else url)
    return ", ".join(shown)


class ElasticsearchStore:
    """Incidents and events in Elasticsearch; see the module docstring.

    ``client`` replaces the client built from ``settings`` (the store then leaves closing it
    to the caller). ``refresh_events`` makes :meth:`add_events` return only once the events are
    searchable, for tests and demos; the detector service does not need it.
    """

    def __init__(
        self, settings: StoreSettings, *, client: Elasticsearch | None = None, refresh_events: bool = False
    ) -> None:
        self.settings = settings
        self.names = IndexNames(settings.index_prefix)
        self.refresh_events = refresh_events
        self._tag = uuid.uuid4().hex  # marks the revisions this store object hands out (upsert)
        self._owns_client = client is None
        self._es = client if client is not None else build_client(settings)
        self._where = redacted_urls(settings.urls)

    def close(self) -> None:
        """Close the connections (unless the client was handed in)."""
        if self._owns_client:
            self._es.close()

    def __enter__(self) -> ElasticsearchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create or update the templates, the incidents index and alias, the events stream, and
        the drift references, silences and notifications indices.

        An index that is already there gets its template's mapping put on it: a template only
        shapes indices created after it, and fields added since (``labels``, ``updated_at``)
        must be searchable in a store set up by an older inferwatch.

        Raises :class:`ElasticsearchSetupError` when the cluster refuses (missing privileges,
        a clashing template) or when ``use_ilm`` is set and the cluster has no ILM.
        """
        names, retention, ilm = self.names, self.settings.events_retention, self.settings.use_ilm
        indices = self._es.indices
        if ilm:
            self._require_ilm()
            self._setup("put the ILM policy", self._es.ilm.put_lifecycle,
                        name=names.events, policy=events_ilm_policy(retention))
        self._setup("put the events index template", indices.put_index_template,
                    name=names.events, **events_template(names, retention, ilm=ilm))
        self._setup("put the incidents index template", indices.put_index_template,
                    name=names.incidents, **incidents_template(names))
        self._create_incidents_index()
        for what, index, template in (("drift references", names.references, references_template(names)),
                                      ("checkpoints", names.checkpoints, checkpoints_template(names)),
                                      ("silences", names.silences, silences_template(names)),
                                      ("notifications", names.notifications, notifications_template(names)),
                                      ("leases", names.leases, leases_template(names))):
            self._setup(f"put the {what} index template", indices.put_index_template, name=index, **template)
            self._create_index(what, index, template["template"]["mappings"])
        quiet = self._es.options(ignore_status=404)
        streams = self._call("look up the events stream", quiet.indices.get_data_stream, name=names.events)
        if not streams.get("data_streams"):
            self._setup("create the events data stream", indices.create_data_stream, name=names.events,
                        exists_ok=True)
        # A template's lifecycle applies to new streams only; keep an existing one in step.
        if ilm:
            self._setup("hand the events to ILM", quiet.indices.delete_data_lifecycle, name=names.events)
        else:
            self._setup("set the events retention", indices.put_data_lifecycle,
                        name=names.events, data_retention=retention)
        log.info("elasticsearch store ready at %s prefix=%s retention=%s by=%s",
                 self._where, names.prefix, retention, "ilm" if ilm else "data-stream-lifecycle")

    def _create_index(self, what: str, index: str, mappings: dict[str, Any]) -> None:
        indices = self._es.indices
        if self._call(f"look up the {what} index", indices.exists, index=index):
            self._setup(f"update the {what} mapping", indices.put_mapping, index=index,
                        properties=mappings["properties"])
        else:
            self._setup(f"create the {what} index", indices.create, index=index, exists_ok=True)

    def check_ready(self) -> None:
        """For commands that only read (or change what is there): the store must have been set
        up, and nothing is created or updated, so a key with ``read`` and ``view_index_metadata``
        alone will do. :class:`StoreUnavailable` when the incidents alias is not there."""
        if not self._call("look up the incidents alias", self._es.indices.exists_alias,
                          name=self.names.incidents):
            raise StoreUnavailable(
                f"no inferwatch store at {self._where} with index prefix {self.names.prefix!r} "
                "(store.index_prefix, INFERWATCH_STORE__INDEX_PREFIX): nothing was recorded there; "
                "`inferwatch detect` sets it up")

    def _create_incidents_index(self) -> None:
        names, indices = self.names, self._es.indices
        if self._call("look up the incidents alias", indices.exists_alias, name=names.incidents):
            # Every index behind the alias (older ones after a rollover too) gets the new fields.
            self._setup("update the incidents mapping", indices.put_mapping, index=names.incidents,
                        properties=INCIDENT_MAPPINGS["properties"])
            return
        self._setup("create the incidents index", indices.create, index=names.incidents_first_index,
                    aliases={names.incidents: {"is_write_index": True}}, exists_ok=True)
        if not self._call("look up the incidents alias", indices.exists_alias, name=names.incidents):
            raise ElasticsearchSetupError(
                f"index {names.incidents_first_index} exists at {self._where} but the alias "
                f"{names.incidents} does not point at it; add the alias (is_write_index: true) or "
                "delete the index, then run the setup again")

    def _require_ilm(self) -> None:
        try:
            status = self._call("check for ILM", self._es.ilm.get_status)
        except StoreUnavailable as exc:
            code = _status(exc)
            if code in (401, 403):
                raise ElasticsearchSetupError(
                    f"INFERWATCH_STORE__USE_ILM is set but the credentials may not read ILM at "
                    f"{self._where} ({code}); grant them the manage_ilm cluster privilege") from exc
            if code is not None and code < 500:
                raise ElasticsearchSetupError(
                    f"INFERWATCH_STORE__USE_ILM is set but the Elasticsearch at {self._where} has no "
                    f"index lifecycle management (GET _ilm/status answered {code}); unset it to keep "
                    "events for INFERWATCH_STORE__EVENTS_RETENTION with the data stream lifecycle"
                ) from exc
            raise
        if status.get("operation_mode") != "RUNNING":
            log.warning("ILM at %s is %s: events will not roll over or expire until it runs",
                        self._where, status.get("operation_mode"))

    def drop(self) -> None:
        """Delete everything this store created under its prefix (for tests and teardown)."""
        names = self.names
        es = self._es.options(ignore_status=404)
        self._call("delete the events data stream", es.indices.delete_data_stream, name=names.events)
        found = self._call("list the incidents indices", es.indices.get, index=names.incidents_pattern,
                           expand_wildcards="all", ignore_unavailable=True)
        if found:
            self._call("delete the incidents indices", es.indices.delete, index=",".join(found))
        for index in (names.references, names.checkpoints, names.silences, names.notifications, names.leases):
            self._call("delete an index", es.indices.delete, index=index)
        templates = (names.events, names.incidents, names.references, names.checkpoints, names.silences,
                     names.notifications, names.leases)
        for template in templates:
            self._call("delete a template", es.indices.delete_index_template, name=template)
        if self.settings.use_ilm:
            quiet = self._es.options(ignore_status=(400, 404, 405))
            self._call("delete the ILM policy", quiet.ilm.delete_lifecycle, name=names.events)

    # -- incidents ---------------------------------------------------------------------------

    def upsert(self, incidents: Sequence[Incident]) -> list[str]:
        """Write incidents by id (a second write replaces the first); searchable on return.

        An incident read from the store is written to the index it was read from, only if its
        sequence number there is still the one read (``if_seq_no``/``if_primary_term``); the
        ids refused for that (409, changed meanwhile) are returned, nothing else is left out.
        """
        latest = {i.id: i for i in incidents}  # as with INSERT OR REPLACE, the last one wins
        if not latest:
            return []
        read = {i.id: r for i in latest.values() if (r := i.revision_in(self._tag)) is not None}
        unread = [incident_id for incident_id in latest if incident_id not in read]
        where = self._incident_indices(unread) if unread else {}
        alias: dict[str, Any] = {"_index": self.names.incidents, "require_alias": True}
        actions = []
        for incident_id, incident in latest.items():
            source = incident_document(incident)
            if incident_id in read:
                index, seq_no, primary_term = read[incident_id]
                targets = [{"_index": index, "if_seq_no": seq_no, "if_primary_term": primary_term}]
            else:
                # After a rollover an incident may live in an older index: replace it there.
                targets = [{"_index": index} for index in where.get(incident_id, [])] or [alias]
            actions += [_action("index", source, _id=incident_id, **t) for t in targets]
        conflicts: list[str] = []
        results = self._bulk("store incidents", actions, refresh=True, conflicts=conflicts)
        for item in results:
            if item.get("_id") in latest and item["_id"] not in conflicts and "_seq_no" in item:
                latest[item["_id"]].at_revision(
                    (self._tag, item["_index"], item["_seq_no"], item["_primary_term"]))
        return conflicts

    def _incident_indices(self, ids: list[str]) -> dict[str, list[str]]:
        page = self._call("look up incidents", self._es.search, index=self.names.incidents,
                          query={"ids": {"values": ids}}, size=2 * len(ids) + 10, source=False,
                          track_total_hits=False, ignore_unavailable=True, allow_no_indices=True)
        where: dict[str, list[str]] = {}
        for hit in page["hits"]["hits"]:
            where.setdefault(hit["_id"], []).append(hit["_index"])
        return where

    def get(self, incident_id: str) -> Incident | None:
        """One incident by id (a unique prefix of at least 4 characters also works)."""
        hits = self._incident_hits({"term": {"event.id": incident_id}}, 1)
        # A full-length id that is not there is simply absent: only a shorter one is a prefix.
        if not hits and MIN_ID_PREFIX <= len(incident_id) < ID_LENGTH:
            prefix = {"prefix": {"event.id": {"value": incident_id, "case_insensitive": True}}}
            hits = self._incident_hits(prefix, AMBIGUOUS_SHOWN + 1)
            if len(hits) > 1:
                raise ambiguous_prefix(incident_id, [h["_id"] for h in hits])
        return self._incident(hits[0]) if hits else None

    def find_active(self, detector: str, subject: str, model: str | None) -> Incident | None:
        """The newest open or acknowledged incident for this detector, subject and model."""
        query = bool_filter([
            {"term": {"rule.name": detector}},
            {"term": {"inferwatch.subject": subject}},
            {"terms": {"inferwatch.status": list(ACTIVE)}},
        ])
        if model is None:
            query["bool"]["must_not"] = [{"exists": {"field": "inferwatch.model"}}]
        else:
            query["bool"]["filter"].append({"term": {"inferwatch.model": model}})
        hits = self._incident_hits(query, 1)
        return self._incident(hits[0]) if hits else None

    def list_incidents(self, query: IncidentQuery) -> list[Incident]:
        """Incidents matching ``query``, newest ``last_seen`` first (then by id)."""
        hits = self._incident_hits(incident_query(query), query.limit)
        return [self._incident(h) for h in hits]

    def _incident(self, hit: dict[str, Any]) -> Incident:
        # The revision a conditional write needs: where the incident is and its sequence number.
        revision = None
        if "_seq_no" in hit:
            revision = (self._tag, hit["_index"], hit["_seq_no"], hit["_primary_term"])
        return incident_from_source(hit["_source"]).at_revision(revision)

    def _incident_hits(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        hits = self._search("read incidents", self.names.incidents, query, INCIDENT_SORT, limit,
                            seq_no_primary_term=True)
        return _unique(hits, limit)

    # -- events ------------------------------------------------------------------------------

    def add_events(self, events: Sequence[InferenceEvent]) -> None:
        """Store events by id; one already stored (a redelivery) is left as it is."""
        stream = self.names.events
        actions = [_action("create", event_document(e), _index=stream, _id=e.id) for e in events]
        if actions:
            self._bulk("store events", actions, refresh=self.refresh_events, require_data_stream=True)

    def search_events(self, query: EventQuery) -> list[InferenceEvent]:
        """Events matching ``query``, newest first (then by id, descending)."""
        hits = self._search("search events", self.names.events, event_query(query), EVENT_SORT, query.limit)
        return [event_from_source(h["_source"]) for h in _unique(hits, query.limit)]

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key`` (``_id``), replacing what was there; readable on return."""
        document = {"@timestamp": timestamp(datetime.now(UTC)),
                    "inferwatch": {"key": key, "bytes": len(data), "data": base64.b64encode(data).decode()}}
        self._call("save the checkpoint", self._es.index, index=self.names.checkpoints, id=key,
                   document=document, refresh=True)

    def load_checkpoint(self, key: str) -> bytes | None:
        """What was saved under ``key``, or ``None``."""
        quiet = self._es.options(ignore_status=404)
        found = self._call("read the checkpoint", quiet.get, index=self.names.checkpoints, id=key)
        if not found.body.get("found"):
            return None
        return base64.b64decode(found.body["_source"]["inferwatch"]["data"])

    # -- drift references --------------------------------------------------------------------

    def save_reference(self, record: ReferenceRecord) -> None:
        """Keep ``record`` as its model's reference (``_id`` = model), replacing any; readable on return."""
        self._call("save the drift reference", self._es.index, index=self.names.references,
                   id=record.model, document=reference_document(record), refresh=True)

    def load_reference(self, model: str) -> ReferenceRecord | None:
        """The reference of ``model``, or ``None``."""
        quiet = self._es.options(ignore_status=404)
        found = self._call("read the drift reference", quiet.get, index=self.names.references, id=model)
        return reference_from_source(found.body["_source"]) if found.body.get("found") else None

    def list_references(self) -> list[ReferenceRecord]:
        """Every model's reference, by model name."""
        hits = self._search("list the drift references", self.names.references, {"match_all": {}},
                            REFERENCE_SORT, -1)
        return [reference_from_source(h["_source"]) for h in hits]

    def delete_reference(self, model: str) -> bool:
        """Forget the reference of ``model``; ``False`` when there was none."""
        quiet = self._es.options(ignore_status=404)
        done = self._call("delete the drift reference", quiet.delete, index=self.names.references,
                          id=model, refresh=True)
        return bool(done.body.get("result") == "deleted")

    # -- alerting: silences -------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl_s: float) -> Lease:
        """Take or renew lease ``name`` for ``holder`` unless another holds it past ``now``; who
        holds it afterwards. The write is conditional on the document read (``if_seq_no``, or
        ``op_type=create`` when there is none): of two processes racing, one wins and the other
        reads the winner's lease."""
        reads, writes = self._es.options(ignore_status=404), self._es.options(ignore_status=409)
        while True:
            found = self._call("read the notifier lease", reads.get, index=self.names.leases, id=name).body
            current = lease_from_source(name, found["_source"]) if found.get("found") else None
            if current is not None and current.holder != holder and current.expires_at > now:
                return current
            taken = Lease(name=name, holder=holder, expires_at=now + timedelta(seconds=ttl_s))
            condition = ({"if_seq_no": found["_seq_no"], "if_primary_term": found["_primary_term"]}
                         if current is not None else {"op_type": "create"})
            written = self._call("take the notifier lease", writes.index, index=self.names.leases, id=name,
                                 document=lease_document(taken), **condition)
            if written.meta.status != 409:  # 409: another process wrote it since it was read; any
                return taken                # other failure raised StoreUnavailable (not leading)

    def save_silence(self, silence: Silence) -> None:
        """Insert or replace a silence by id; searchable on return."""
        self._call("save the silence", self._es.index, index=self.names.silences, id=silence.id,
                   document=silence_document(silence), refresh=True)

    def list_silences(self, *, include_expired: bool = False, now: datetime | None = None) -> list[Silence]:
        """Silences, newest ``created_at`` first (then by id); only those not yet ended at ``now``
        (default: the current time) unless ``include_expired``."""
        query = silence_query(include_expired=include_expired, now=now or datetime.now(UTC))
        hits = self._search("list the silences", self.names.silences, query, SILENCE_SORT, -1)
        return [silence_from_source(h["_source"]) for h in hits]

    def get_silence(self, silence_id: str) -> Silence | None:
        """One silence by id, or ``None``."""
        quiet = self._es.options(ignore_status=404)
        found = self._call("read the silence", quiet.get, index=self.names.silences, id=silence_id)
        return silence_from_source(found.body["_source"]) if found.body.get("found") else None

    # -- alerting: notifications ---------------------------------------------------------------

    def save_notifications(self, notifications: Sequence[Notification]) -> None:
        """Insert or replace notifications by id (the outbox write); searchable on return."""
        latest = {n.id: n for n in notifications}  # as with INSERT OR REPLACE, the last one wins
        index = self.names.notifications
        actions = [_action("index", notification_document(n), _index=index, _id=n.id)
                   for n in latest.values()]
        if actions:
            self._bulk("store notifications", actions, refresh=True)

    def due_notifications(self, now: datetime, limit: int = 100) -> list[Notification]:
        """``pending`` notifications due at ``now``, oldest ``created_at`` first (then ``seq``, id)."""
        hits = self._search("read the notification outbox", self.names.notifications, due_query(now),
                            NOTIFICATION_DUE_SORT, limit)
        return [notification_from_source(h["_source"]) for h in hits]

    def latest_notifications(self, streams: Collection[str] | None = None) -> list[Notification]:
        """Each stream's notification with the highest ``seq`` (the lowest id on a tie), by
        stream; only the streams in ``streams`` when given.

        One hit per stream through ``collapse``, paged with ``search_after``: every stream,
        however many there are.
        """
        if streams is None:
            return sorted(self._latest_per_stream({"match_all": {}}), key=lambda n: n.stream)
        wanted = sorted({stream_id(s) for s in streams})
        latest: list[Notification] = []
        for start in range(0, len(wanted), PAGE_SIZE):
            latest += self._latest_per_stream({"terms": {"stream_id": wanted[start:start + PAGE_SIZE]}})
        return sorted(latest, key=lambda n: n.stream)

    def _latest_per_stream(self, query: dict[str, Any]) -> list[Notification]:
        latest: list[Notification] = []
        after: list[Any] | None = None
        while True:
            page = self._call(
                "read the latest notifications", self._es.search, index=self.names.notifications,
                query=query, collapse=LATEST_PER_STREAM, sort=LATEST_PER_STREAM_SORT,
                size=PAGE_SIZE, search_after=after, source=False, track_total_hits=False,
                ignore_unavailable=True, allow_no_indices=True)
            hits = page["hits"]["hits"]
            latest += [notification_from_source(h["inner_hits"]["latest"]["hits"]["hits"][0]["_source"])
                       for h in hits]
            if len(hits) < PAGE_SIZE:
                return latest
            after = hits[-1]["sort"]

    def list_notifications(self, query: NotificationQuery) -> list[Notification]:
        """The notification log, newest ``created_at`` first (then highest ``seq``, then id)."""
        hits = self._search("read the notification log", self.names.notifications, notification_query(query),
                            NOTIFICATION_LOG_SORT, query.limit)
        return [notification_from_source(h["_source"]) for h in hits]

    def prune_alerting(self, before: datetime) -> int:
        """Forget old notifications (not pending, not their stream's latest) and ended silences.

        Found by search and deleted in bulk (the local node has no ``_delete_by_query``)."""
        keep = {n.id for n in self.latest_notifications()}
        old = [h for h in self._search("find old notifications", self.names.notifications,
                                       old_notifications_query(before), NOTIFICATION_LOG_SORT, -1)
               if h["_id"] not in keep]
        ended = list(self._search("find ended silences", self.names.silences, ended_silences_query(before),
                                  SILENCE_SORT, -1))
        actions = [_action("delete", None, _index=h["_index"], _id=h["_id"]) for h in [*old, *ended]]
        if actions:
            self._bulk("forget old notifications and silences", actions, refresh=True)
        return len(actions)

    # -- talking to Elasticsearch ------------------------------------------------------------

    def _call(self, what: str, request: Callable[..., T], /, **params: Any) -> T:
        """Send one request; an unreachable or failing cluster becomes :class:`StoreUnavailable`."""
        try:
            return request(**params)
        except ApiError as exc:
            raise StoreUnavailable(
                f"Elasticsearch at {self._where} could not {what}: {_describe(exc)}{_hint(exc.meta.status)}"
            ) from exc
        except TransportError as exc:  # connection refused, timeout, TLS
            raise StoreUnavailable(
                f"cannot reach Elasticsearch at {self._where} to {what}: {type(exc).__name__}: {exc.message}"
            ) from exc

    def _setup(self, what: str, request: Callable[..., Any], /, *, exists_ok: bool = False,
               **params: Any) -> None:
        """A setup request: a 4xx is :class:`ElasticsearchSetupError`, not a passing outage."""
        try:
            self._call(what, request, **params)
        except StoreUnavailable as exc:
            code = _status(exc)
            if code is None or code >= 500 or code == 429:
                raise
            if exists_ok and _error_type(exc) == "resource_already_exists_exception":
                return  # another process set up the same store a moment ago
            raise ElasticsearchSetupError(str(exc)) from exc

    def _search(
        self, what: str, index: str, query: dict[str, Any], sort: list[dict[str, str]], limit: int,
        **params: Any,
    ) -> Iterator[dict[str, Any]]:
        """Hits in ``sort`` order, page by page (``search_after``); ``limit < 0`` means all."""
        after: list[Any] | None = None
        seen = 0
        while limit < 0 or seen < limit:
            size = PAGE_SIZE if limit < 0 else min(PAGE_SIZE, limit - seen)
            page = self._call(what, self._es.search, index=index, query=query, sort=sort, size=size,
                              search_after=after, track_total_hits=False, ignore_unavailable=True,
                              allow_no_indices=True, **params)
            hits = page["hits"]["hits"]
            yield from hits
            seen += len(hits)
            if len(hits) < size:
                return
            after = hits[-1]["sort"]

    def _bulk(self, what: str, actions: list[dict[str, Any]], *, conflicts: list[str] | None = None,
              **params: Any) -> list[dict[str, Any]]:
        """Send ``actions``; return each item's result. A 409 on ``create`` is a redelivery (stored
        before); with ``conflicts``, a 409 on a conditional write is collected there by id."""
        failures: list[dict[str, Any]] = []
        done: list[dict[str, Any]] = []

        def send() -> None:
            results = streaming_bulk(self._es, actions, raise_on_error=False, max_retries=3,
                                     initial_backoff=0.5, expand_action_callback=_bulk_lines, **params)
            for success, item in results:
                op, result = next(iter(item.items()))
                done.append(result)
                if success or (result.get("status") == 409 and op == "create"):
                    continue  # (a 409 on create: stored before, a redelivery)
                if result.get("status") == 409 and op == "index" and conflicts is not None:
                    conflicts.append(result["_id"])  # changed since it was read
                else:
                    failures.append(result)

        self._call(what, send)
        if failures:
            first, status = failures[0], int(failures[0].get("status", 0))
            error = first.get("error")
            reason = f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict) else error
            raise StoreUnavailable(
                f"Elasticsearch at {self._where} refused to {what}: {len(failures)} of {len(actions)} "
                f"failed (first: {status} {reason}){_hint(status)}"
            )
        return done


def _unique(hits: Iterable[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    # An event redelivered after its data stream rolled over is stored once in each backing
    # index; readers see it once.
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for hit in hits:
        if hit["_id"] in seen:
            continue
        seen.add(hit["_id"])
        out.append(hit)
        if len(out) == limit:
            break
    return out


def _action(op: str, source: dict[str, Any] | None, **meta: Any) -> dict[str, Any]:
    return {"op": op, "meta": meta, "source": source}


def _bulk_lines(action: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    # The helpers' own expansion drops metadata it does not know, such as require_alias.
    return {action["op"]: action["meta"]}, action["source"]


def _status(exc: StoreUnavailable) -> int | None:
    cause = exc.__cause__
    return cause.meta.status if isinstance(cause, ApiError) else None


def _error_type(exc: StoreUnavailable) -> str | None:
    cause = exc.__cause__
    if isinstance(cause, ApiError) and isinstance(cause.body, dict):
        error = cause.body.get("error")
        return error.get("type") if isinstance(error, dict) else None
    return None


def _describe(exc: ApiError) -> str:
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    if isinstance(error, dict):
        root = (error.get("root_cause") or [error])[0]
        return f"{exc.meta.status} {root.get('type')}: {root.get('reason')}"
    message = exc.message if exc.message not in (None, "None", "") else None
    if message is None:  # a HEAD request's error has no body: "401 None" said nothing
        try:
            message = HTTPStatus(exc.meta.status).phrase
        except ValueError:
            message = "(no reason given)"
    return f"{exc.meta.status} {message}"


def _hint(status: int) -> str:
    if status == 401:
        return " (check INFERWATCH_STORE__API_KEY or INFERWATCH_STORE__USERNAME/PASSWORD)"
    if status == 403:
        return " (the credentials lack a privilege on the inferwatch indices; see docs/elasticsearch.md)"
    if status == 404:
        return " (the inferwatch indices are missing: run the store setup, see docs/elasticsearch.md)"
    if status == 429 or status >= 500:
        return " (the cluster is overloaded or failing; try again later)"
    return ""


"""The Elasticsearch store against a real node: layout, ECS documents, idempotence, failures.

What both stores must answer alike is in test_store_contract.py; this file checks what only
Elasticsearch has (templates, the data stream and its retention, the alias, the documents as
Kibana sees them) and how the store fails. Tests that need no cluster are not marked.
"""

from __future__ import annotations

import copy
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from pydantic import SecretStr

from inferwatch.collectors.event import EventOutput
from inferwatch.collectors.settings import SettingsError, StoreSettings
from inferwatch.detectors import es_store
from inferwatch.detectors.alerts.model import (
    Matcher,
    Notification,
    NotificationAlert,
    NotificationQuery,
    Silence,
    notification_id,
)
from inferwatch.detectors.base import SEVERITY_ORDER, Finding
from inferwatch.detectors.es_mappings import (
    INCIDENT_MAPPINGS,
    IndexNames,
    events_ilm_policy,
    events_template,
    search_words,
)
from inferwatch.detectors.es_store import ElasticsearchSetupError, ElasticsearchStore, build_client
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.store import EventQuery, IncidentQuery, StoreUnavailable
from inferwatch.testing import make_event, memory_store
from tests.integration.conftest import LocalServices, unique_name

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def settings_for(url: str, **kw: Any) -> StoreSettings:
    return StoreSettings(kind="elasticsearch", urls=[url], index_prefix=unique_name("iw-test"), **kw)


@pytest.fixture
def es(local_services: LocalServices) -> Iterator[Elasticsearch]:
    client = Elasticsearch(local_services.es_url, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def store(local_services: LocalServices) -> Iterator[ElasticsearchStore]:
    s = ElasticsearchStore(settings_for(local_services.es_url, events_retention="7d"), refresh_events=True)
    s.setup()
    yield s
    s.drop()
    s.close()


def finding(hours: float, *, subject: str = "principal:p1", severity: str = "high") -> Finding:
    return Finding(detector="rate", kind="abuse", severity=severity, score=0.8, title="too many requests",
                   summary="over baseline", subject=subject, time=T0 + timedelta(hours=hours),
                   model="m", service="svc", event_ids=[f"e{hours}"])


def source_of(es: Elasticsearch, index: str, doc_id: str) -> dict[str, Any]:
    hits = es.search(index=index, query={"ids": {"values": [doc_id]}})["hits"]["hits"]
    assert len(hits) == 1
    return dict(hits[0]["_source"])


# -- layout -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_setup_is_idempotent_and_builds_the_layout(store: ElasticsearchStore, es: Elasticsearch) -> None:
    store.setup()
    store.setup()
    names = store.names
    [stream] = es.indices.get_data_stream(name=names.events)["data_streams"]
    assert stream["template"] == names.events
    assert stream["lifecycle"]["data_retention"] == "7d"
    assert len(stream["indices"]) == 1
    aliases = es.indices.get_alias(name=names.incidents)
    first = names.incidents_first_index
    assert aliases.body == {first: {"aliases": {names.incidents: {"is_write_index": True}}}}
    mapping = es.indices.get_mapping(index=first)[first]["mappings"]
    assert mapping["dynamic"] == "false"
    assert mapping["properties"]["event"]["properties"]["kind"]["type"] == "keyword"
    [template] = es.indices.get_index_template(name=names.incidents)["index_templates"]
    assert template["index_template"]["index_patterns"] == [names.incidents_pattern]
    assert mapping["properties"]["labels"]["type"] == "flattened"
    assert field_type(mapping, "inferwatch.updated_at") == "date"
    assert field_type(mapping, "inferwatch.updated_at_us") == "long"
    silences = es.indices.get_mapping(index=names.silences)[names.silences]["mappings"]
    assert [field_type(silences, f) for f in ("id", "created_at", "ends_at")] == ["keyword", "date", "date"]
    notes = es.indices.get_mapping(index=names.notifications)[names.notifications]["mappings"]
    assert {f: field_type(notes, f) for f in ("id", "stream", "seq", "status", "receiver", "created_at",
                                              "next_attempt_at", "alerts.incident_id")} == {
        "id": "keyword", "stream": "keyword", "seq": "integer", "status": "keyword", "receiver": "keyword",
        "created_at": "date", "next_attempt_at": "date", "alerts.incident_id": "keyword"}
    leases = es.indices.get_mapping(index=names.leases)[names.leases]["mappings"]
    assert [field_type(leases, f) for f in ("inferwatch.holder", "inferwatch.expires_at")] == [
        "keyword", "date"]
    assert notes["dynamic"] == "false"


def field_type(mapping: dict[str, Any], path: str) -> str:
    for part in path.split("."):
        mapping = mapping["properties"][part]
    return str(mapping["type"])


@pytest.mark.integration
def test_setup_adds_new_fields_to_a_store_set_up_by_an_older_inferwatch(
    local_services: LocalServices, es: Elasticsearch
) -> None:
    settings = settings_for(local_services.es_url)
    names = IndexNames(settings.index_prefix)
    old = copy.deepcopy(INCIDENT_MAPPINGS)
    del old["properties"]["labels"]
    for field in ("updated_at", "updated_at_us"):
        del old["properties"]["inferwatch"]["properties"][field]
    es.indices.create(index=names.incidents_first_index, mappings=old,
                      aliases={names.incidents: {"is_write_index": True}})
    es.indices.create(index=names.references)
    with ElasticsearchStore(settings) as s:
        try:
            s.setup()
            mapping = es.indices.get_mapping(index=names.incidents_first_index)[names.incidents_first_index]
            assert field_type(mapping["mappings"], "inferwatch.updated_at_us") == "long"
            assert mapping["mappings"]["properties"]["labels"]["type"] == "flattened"
            [incident] = IncidentManager(memory_store()).apply([finding(0)])
            changed = incident.model_copy(update={"updated_at": T0, "labels": {"team": "fraud"}})
            s.upsert([changed])
            assert s.list_incidents(IncidentQuery(updated_since=T0)) == [changed]
            assert es.count(index=names.incidents, query={"term": {"labels.team": "fraud"}})["count"] == 1
            assert s.latest_notifications() == []  # the alerting indices were made beside them
            assert es.indices.exists(index=names.silences)
        finally:
            s.drop()


@pytest.mark.integration
def test_setup_brings_an_existing_stream_to_the_configured_retention(
    store: ElasticsearchStore, es: Elasticsearch
) -> None:
    changed = store.settings.model_copy(update={"events_retention": "90d"})
    with ElasticsearchStore(changed) as again:
        again.setup()
    [stream] = es.indices.get_data_stream(name=store.names.events)["data_streams"]
    assert stream["lifecycle"]["data_retention"] == "90d"


@pytest.mark.integration
def test_drop_removes_everything_it_made(local_services: LocalServices, es: Elasticsearch) -> None:
    with ElasticsearchStore(settings_for(local_services.es_url)) as s:
        s.setup()
        IncidentManager(s).apply([finding(0)])
        s.save_silence(a_silence())
        s.save_notifications([a_notification()])
        s.acquire_lease("notifier", "me", T0, 30)
        s.drop()
        s.drop()  # and again, with nothing left
        left = es.indices.get(index=f"{s.names.prefix}*,.ds-{s.names.prefix}*", expand_wildcards="all")
        assert left.body == {}
        for template in (s.names.events, s.names.incidents, s.names.references, s.names.silences,
                         s.names.notifications, s.names.leases):
            assert not es.indices.exists_index_template(name=template)


def a_silence() -> Silence:
    return Silence(id="s1", matchers=[Matcher(name="service", op="=", value="svc")], starts_at=T0,
                   ends_at=T0 + timedelta(hours=1), created_by="alice", created_at=T0)


def a_notification() -> Notification:
    alert = NotificationAlert(incident_id="inc-a", labels={"alertname": "rate"}, state="firing",
                              incident_status="open", starts_at=T0, updated_at=T0, severity="high")
    return Notification(id=notification_id("g|pager|webhook|0", 1), group_key="g", receiver="pager",
                        integration="webhook", seq=1, created_at=T0, alerts=[alert], next_attempt_at=T0)


@pytest.mark.integration
def test_silences_and_notifications_are_documents_kibana_can_filter(
    store: ElasticsearchStore, es: Elasticsearch
) -> None:
    store.save_silence(a_silence())
    note = a_notification()
    store.save_notifications([note])
    silence_doc = source_of(es, store.names.silences, "s1")
    assert silence_doc["matchers"] == ['service="svc"']
    assert silence_doc["ends_at"] == "2026-05-01T01:00:00.000000Z"
    doc = source_of(es, store.names.notifications, note.id)
    assert (doc["stream"], doc["seq"], doc["status"]) == (note.stream, 1, "pending")
    assert doc["alerts"] == {"incident_id": ["inc-a"]}
    kibana_style = {"bool": {"filter": [{"term": {"alerts.incident_id": "inc-a"}},
                                        {"range": {"next_attempt_at": {"lte": "2026-05-01T00:00:00Z"}}}]}}
    assert es.count(index=store.names.notifications, query=kibana_style)["count"] == 1


# -- incidents --------------------------------------------------------------------------------


@pytest.mark.integration
def test_an_incident_is_an_ecs_alert(store: ElasticsearchStore, es: Elasticsearch) -> None:
    [incident] = IncidentManager(store).apply([finding(0), finding(0.5, severity="critical")])
    doc = source_of(es, store.names.incidents, incident.id)
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["id"] == incident.id
    assert doc["event"]["severity"] == SEVERITY_ORDER["critical"]
    assert doc["event"]["risk_score"] == incident.score
    assert doc["rule"] == {"name": "rate", "category": "abuse", "ruleset": "inferwatch"}
    assert doc["service"] == {"name": "svc"}
    assert doc["message"] == "too many requests"
    assert datetime.fromisoformat(doc["@timestamp"]) == incident.last_seen == T0 + timedelta(hours=0.5)
    assert datetime.fromisoformat(doc["event"]["end"]) == incident.last_seen
    assert datetime.fromisoformat(doc["event"]["start"]) == incident.first_seen == T0
    assert doc["inferwatch"]["incident"]["finding_digests"] == incident.finding_digests
    assert doc["inferwatch"]["status"] == "open"
    assert doc["inferwatch"]["subject"] == "principal:p1"
    # Kibana-style queries on the ECS fields find it.
    query = {"bool": {"filter": [{"term": {"event.kind": "alert"}}, {"range": {"event.severity": {"gte": 3}}},
                                 {"match": {"message": "requests"}}]}}
    assert es.count(index=store.names.incidents, query=query)["count"] == 1


@pytest.mark.integration
def test_a_second_upsert_updates_the_same_document(store: ElasticsearchStore, es: Elasticsearch) -> None:
    manager = IncidentManager(store)
    [first] = manager.apply([finding(0)])
    [second] = manager.apply([finding(0.25)])
    manager.acknowledge(first.id, "alice")
    assert second.id == first.id
    assert es.count(index=store.names.incidents)["count"] == 1
    stored = store.get(first.id)
    assert (stored.count, stored.status) == (2, "acknowledged")


@pytest.mark.integration
def test_after_a_rollover_an_incident_is_updated_where_it_lives(
    store: ElasticsearchStore, es: Elasticsearch
) -> None:
    manager = IncidentManager(store)
    [old] = manager.apply([finding(0)])
    rolled = es.indices.rollover(alias=store.names.incidents)
    assert rolled["rolled_over"]
    [updated] = manager.apply([finding(0.25)])
    [new] = manager.apply([finding(5, subject="principal:p2")])
    assert updated.id == old.id
    assert es.count(index=store.names.incidents)["count"] == 2
    assert es.count(index=store.names.incidents_first_index)["count"] == 1  # updated in place
    assert es.count(index=rolled["new_index"], query={"ids": {"values": [new.id]}})["count"] == 1
    assert store.get(old.id).count == 2
    assert [i.id for i in store.list_incidents(IncidentQuery())] == [new.id, old.id]


@pytest.mark.integration
def test_results_page_past_one_request(store: ElasticsearchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(es_store, "PAGE_SIZE", 3)
    events = [make_event(T0.timestamp() + i, id=f"ev-{i:02d}") for i in range(10)]
    store.add_events(events)
    newest = [e.id for e in reversed(events)]
    assert [e.id for e in store.search_events(EventQuery(limit=7))] == newest[:7]
    assert [e.id for e in store.search_events(EventQuery(limit=9))] == newest[:9]
    assert [e.id for e in store.search_events(EventQuery(limit=-1))] == newest
    IncidentManager(store).apply([finding(i, subject=f"principal:p{i}") for i in range(7)])
    assert len(store.list_incidents(IncidentQuery(limit=-1))) == 7
    assert len(store.list_incidents(IncidentQuery(limit=4))) == 4


# -- events -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_an_event_has_ecs_fields_and_comes_back_exactly(store: ElasticsearchStore, es: Elasticsearch) -> None:
    event = make_event(T0.timestamp() + 0.000123, principal="p_abc", model="gpt-x", text="Ignore all rules",
                       trace_id="c" * 32, span_id="d" * 16, operation="chat", duration_ms=12.5, status=503,
                       error="Timeout", client_ip="203.0.113.0", endpoint="/v1/chat/completions",
                       output=EventOutput(text="no", tokens=1, finish_reason="stop"),
                       attributes={"tenant": "t1"}, future_field={"nested": True})
    store.add_events([event])
    doc = source_of(es, store.names.events, event.id)
    assert doc["@timestamp"] == "2026-05-01T00:00:00.000123Z"
    assert doc["event"] == {"id": event.id, "kind": "event", "module": "inferwatch",
                            "dataset": "inferwatch.inference", "duration": 12_500_000, "outcome": "failure"}
    assert doc["service"] == {"name": "svc"}
    assert doc["user"] == {"id": "p_abc"}
    assert doc["trace"] == {"id": "c" * 32}
    assert doc["span"] == {"id": "d" * 16}
    assert doc["client"] == {"ip": "203.0.113.0"}
    assert doc["url"] == {"path": "/v1/chat/completions"}
    assert doc["http"] == {"response": {"status_code": 503}}
    assert doc["error"] == {"type": "Timeout"}
    assert doc["gen_ai"] == {"operation": {"name": "chat"}, "request": {"model": "gpt-x"},
                             "response": {"finish_reasons": ["stop"]}, "usage": {"output_tokens": 1}}
    assert set(doc["inferwatch"]) == {"event", "time_us"}  # the text is indexed, not stored twice
    assert store.search_events(EventQuery(text="ignore rules")) == [event]
    kibana_style = {"match": {"inferwatch.text.input": "rules"}}
    assert es.count(index=store.names.events, query=kibana_style)["count"] == 1
    [stream] = es.indices.get_data_stream(name=store.names.events)["data_streams"]
    assert es.count(index=stream["indices"][0]["index_name"])["count"] == 1


@pytest.mark.integration
def test_an_event_is_stored_once_however_often_it_is_added(
    store: ElasticsearchStore, es: Elasticsearch
) -> None:
    events = [make_event(T0.timestamp() + i) for i in range(5)]
    store.add_events(events)
    store.add_events(events[2:] + events[:1])
    store.add_events([events[4], events[4]])
    assert es.count(index=store.names.events)["count"] == 5


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_before_setup_reads_find_nothing_and_writes_ask_for_setup(
    local_services: LocalServices, es: Elasticsearch
) -> None:
    with ElasticsearchStore(settings_for(local_services.es_url)) as s:
        assert s.list_incidents(IncidentQuery()) == []
        assert s.get("abcdef") is None
        assert s.search_events(EventQuery()) == []
        assert s.list_silences(include_expired=True) == []
        assert s.get_silence("s1") is None
        assert s.due_notifications(T0) == []
        assert s.latest_notifications() == []
        assert s.list_notifications(NotificationQuery()) == []
        with pytest.raises(StoreUnavailable, match=r"setup"):
            IncidentManager(s).apply([finding(0)])
        with pytest.raises(StoreUnavailable, match=r"setup"):
            s.add_events([make_event(0.0)])
        # Nothing was created by accident (a plain index where the alias or stream belongs).
        assert es.indices.get(index=f"{s.names.prefix}*", expand_wildcards="all").body == {}


def test_an_unreachable_cluster_is_store_unavailable_and_no_secret_is_shown() -> None:
    settings = StoreSettings(kind="elasticsearch", urls=["http://elastic:hunter2@127.0.0.1:1"],
                             username="elastic", password=SecretStr("s3cret-pw"), request_timeout_s=1,
                             index_prefix="iw-test-unreachable")
    started = time.monotonic()
    with ElasticsearchStore(settings) as s:
        [incident] = IncidentManager(memory_store()).apply([finding(0)])
        calls = [s.setup, lambda: s.upsert([incident]), lambda: s.get("abcd"),
                 lambda: s.find_active("d", "s", None), lambda: s.list_incidents(IncidentQuery()),
                 lambda: s.add_events([make_event(0.0)]), lambda: s.search_events(EventQuery()),
                 lambda: s.save_silence(a_silence()), s.list_silences, lambda: s.get_silence("s1"),
                 lambda: s.save_notifications([a_notification()]), lambda: s.due_notifications(T0),
                 s.latest_notifications, lambda: s.list_notifications(NotificationQuery())]
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                call()
            message = str(caught.value)
            assert "127.0.0.1:1" in message
            assert "hunter2" not in message
            assert "s3cret" not in message
        with pytest.raises(StoreUnavailable):
            IncidentManager(s).apply([finding(0)])
    assert time.monotonic() - started < 30


@pytest.mark.integration
def test_use_ilm_without_ilm_on_the_cluster_is_a_clear_error(
    local_services: LocalServices, es: Elasticsearch
) -> None:
    with ElasticsearchStore(settings_for(local_services.es_url, use_ilm=True)) as s:
        with pytest.raises(ElasticsearchSetupError, match="INFERWATCH_STORE__USE_ILM") as caught:
            s.setup()
        assert isinstance(caught.value, SettingsError)  # the CLI reports it as a settings problem
        assert not es.indices.exists_index_template(name=s.names.events)  # nothing half-made


# -- no cluster needed ------------------------------------------------------------------------


def test_with_ilm_the_template_names_the_policy_instead_of_a_lifecycle() -> None:
    names = IndexNames("iw")
    with_ilm = events_template(names, "30d", ilm=True)["template"]
    assert with_ilm["settings"] == {"index.lifecycle.name": "iw-events"}
    assert "lifecycle" not in with_ilm
    assert events_template(names, "30d", ilm=False)["template"]["lifecycle"] == {"data_retention": "30d"}
    assert events_ilm_policy("30d")["phases"]["delete"]["min_age"] == "30d"
    assert events_ilm_policy("12h")["phases"]["hot"]["actions"]["rollover"]["max_age"] == "12h"


def test_credentials_are_one_kind_or_the_other() -> None:
    both = StoreSettings(kind="elasticsearch", api_key=SecretStr("k"), username="u", password=SecretStr("p"))
    with pytest.raises(SettingsError, match="not both"):
        build_client(both)
    with pytest.raises(SettingsError, match="INFERWATCH_STORE__PASSWORD"):
        build_client(StoreSettings(kind="elasticsearch", username="u"))
    build_client(StoreSettings(kind="elasticsearch", api_key=SecretStr("k"))).close()


@pytest.mark.parametrize("text", [
    "Hello-World foo_bar don't 3.14 x.y email@example.com CamelCase",
    "café naïve résumé e\u0301te\u0301 Ấ ǖ ø ß Ǆ ǅ ﬁne Straße",
    "İstanbul ΣΊΣΥΦΟΣ µ \u017f ς ẛ Ⅻ ① ½ x²",
    "中文字 日本語のテキスト 한국어 العربية ١٢٣ हिन्दी אַב",
    "😀smile ⭐ tabs\tand\nnewlines\u00a0nbsp\u3000ideographic — “quotes” «guillemets»",
    "private\ue000use a\u0301b \u0301 lone mark",
    "x" * 300 + " short",
])
def test_search_words_are_the_words_sqlite_fts5_sees(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.execute("INSERT INTO t VALUES (?)", (text,))
    fts5 = [row[0] for row in db.execute("SELECT term FROM v ORDER BY offset")]
    # A word too long for one Elasticsearch term is indexed as its hash, and matched whole.
    assert search_words(text) == [w if len(w) <= 100 else search_words(w)[0] for w in fts5]

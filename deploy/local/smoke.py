"""End-to-end check of the local services with the project's real clients.

    .venv/bin/python deploy/local/smoke.py      # after: python3 deploy/local/services.py up

Kafka (kafka-python): admin client creates a 4-partition topic, the default (idempotent, acks=all)
producer sends one record, a consumer group reads it and commits, the committed offset is read back.
Elasticsearch (elasticsearch 8.x): index + document + search; an index template with a data stream
and "lifecycle": {"data_retention": "7d"}; the data stream is auto-created on first write and read
back with its lifecycle. Everything it creates has a random suffix and is deleted at the end.
"""

import os
import sys
import time
import uuid

from elasticsearch import Elasticsearch
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def check_kafka(bootstrap: str, suffix: str) -> None:
    topic, group = f"inferwatch-smoke-{suffix}", f"inferwatch-smoke-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="inferwatch-smoke")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
        partitions = admin.describe_topics([topic])[0]["partitions"]
        assert len(partitions) == 4, partitions
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        sent = producer.send(topic, key=b"k", value=b"hello").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=30000,
        )
        record = next(iter(consumer))
        assert record.value == b"hello", record
        consumer.commit()
        committed = consumer.committed(TopicPartition(topic, sent.partition))
        consumer.close()
        assert committed == sent.offset + 1, committed
        groups = {g["group_id"]: g for g in admin.list_groups()}
        print(
            f"kafka ok: 4 partitions, record at {sent.partition}/{sent.offset}, committed {committed}, "
            f"group type {groups[group].get('group_type', '?')}"
        )
    finally:
        admin.delete_topics([topic])
        admin.delete_groups([group])
        admin.close()


def check_elasticsearch(url: str, suffix: str) -> None:
    es = Elasticsearch(url, request_timeout=60)
    index, template, stream = (
        f"inferwatch-smoke-{suffix}",
        f"inferwatch-smoke-ds-{suffix}",
        f"ism-{suffix}-events",
    )
    try:
        version = es.info()["version"]["number"]
        es.indices.create(index=index, mappings={"properties": {"model": {"type": "keyword"}}})
        es.index(index=index, id="1", document={"model": "m1", "latency_ms": 12.5}, refresh=True)
        hits = es.search(index=index, query={"term": {"model": "m1"}})["hits"]["total"]["value"]
        assert hits == 1, hits
        es.indices.put_index_template(
            name=template,
            index_patterns=[f"ism-{suffix}-*"],
            data_stream={},
            priority=1000,
            template={
                "lifecycle": {"data_retention": "7d"},
                "mappings": {"properties": {"@timestamp": {"type": "date"}, "model": {"type": "keyword"}}},
            },
        )
        es.index(
            index=stream, document={"@timestamp": "2026-01-01T00:00:00Z", "model": "m1"}, op_type="create"
        )
        es.indices.refresh(index=stream)
        ds = es.indices.get_data_stream(name=stream)["data_streams"][0]
        assert ds["lifecycle"]["data_retention"] == "7d", ds
        assert es.count(index=stream)["count"] == 1
        print(
            f"elasticsearch {version} ok: index/search, data stream {stream} "
            f"with backing index {ds['indices'][0]['index_name']} and lifecycle {ds['lifecycle']}"
        )
    finally:
        es.options(ignore_status=404).indices.delete_data_stream(name=stream)
        es.options(ignore_status=404).indices.delete_index_template(name=template)
        es.options(ignore_status=404).indices.delete(index=index)


def main() -> int:
    kafka = os.environ.get(
        "INFERWATCH_LOCAL_KAFKA_BOOTSTRAP",
        f"127.0.0.1:{os.environ.get('INFERWATCH_LOCAL_KAFKA_PORT', 19092)}",
    )
    es = os.environ.get(
        "INFERWATCH_LOCAL_ES_URL", f"http://127.0.0.1:{os.environ.get('INFERWATCH_LOCAL_ES_PORT', 19200)}"
    )
    suffix = uuid.uuid4().hex[:8]
    started = time.monotonic()
    check_kafka(kafka, suffix)
    check_elasticsearch(es, suffix)
    print(f"smoke ok in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a Kafka error says: the servers, what failed, and what to check (no broker needed)."""

import pytest
from kafka import errors as kerr

from inferwatch.collectors.bus import BusUnavailable
from inferwatch.collectors.kafka_config import guard


def test_no_broker_answering_says_it_could_not_be_reached() -> None:
    with pytest.raises(BusUnavailable) as err, guard(["127.0.0.1:39999"], "could not create topics"):
        raise kerr.KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:39999']")
    message = str(err.value)
    assert message.startswith("Kafka at 127.0.0.1:39999 could not be reached: ")
    assert "create topics" not in message
    assert "INFERWATCH_BUS__BOOTSTRAP_SERVERS" in message


def test_a_broker_refusing_says_what_it_refused() -> None:
    with pytest.raises(BusUnavailable, match="Kafka at b1:9092 could not create topics: "), \
            guard(["b1:9092"], "could not create topics"):
        raise kerr.KafkaTimeoutError("Timed out waiting for the topics to be created")

"""What an Elasticsearch error says, without a cluster (the integration tests run one without
security, so a 401 cannot be had from it)."""

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError

from inferwatch.detectors.es_store import _describe, _hint


def _error(status: int, message: object, body: object) -> ApiError:
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=NodeConfig("http", "es", 9200))
    return ApiError(message=message, meta=meta, body=body)  # type: ignore[arg-type]


@pytest.mark.parametrize("message", [None, "None", ""])
def test_an_error_without_a_body_is_named_by_its_status(message: object) -> None:
    # A HEAD request (exists_alias) refused with 401 printed "401 None" (on-call walk-through).
    assert _describe(_error(401, message, None)) == "401 Unauthorized"
    assert _describe(_error(599, message, None)) == "599 (no reason given)"
    assert "INFERWATCH_STORE__API_KEY" in _hint(401)


def test_an_error_with_a_body_gives_its_root_cause() -> None:
    body = {"error": {"root_cause": [{"type": "security_exception", "reason": "unable to authenticate"}]}}
    said = _describe(_error(401, "security_exception", body))
    assert said == "401 security_exception: unable to authenticate"

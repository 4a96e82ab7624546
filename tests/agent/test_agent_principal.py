"""Pseudonyms are keyed, deterministic and taken from the right header; addresses are coarsened."""

from __future__ import annotations

import re

from pydantic import SecretStr

from inferwatch.agent.principal import Pseudonymizer, client_address, truncate_ip


def test_pseudonym_is_deterministic_and_shaped() -> None:
    first = Pseudonymizer(SecretStr("key-1")).pseudonym("alice-api-key")
    again = Pseudonymizer(SecretStr("key-1")).pseudonym("alice-api-key")
    assert first == again
    assert re.fullmatch(r"p_[0-9a-f]{24}", first)
    assert "alice" not in first


def test_pseudonym_depends_on_the_key_and_the_credential() -> None:
    under_one = Pseudonymizer("key-1")
    assert under_one.pseudonym("alice") != Pseudonymizer("key-2").pseudonym("alice")
    assert under_one.pseudonym("alice") != under_one.pseudonym("bob")


def test_configured_header_wins_over_bearer() -> None:
    pseudo = Pseudonymizer("k", header="X-User-Id")
    headers = {"x-user-id": "user-42", "authorization": "Bearer tok-123"}
    assert pseudo.from_headers(headers) == pseudo.pseudonym("user-42")


def test_bearer_token_is_used_without_the_header() -> None:
    pseudo = Pseudonymizer("k", header="x-api-key")
    assert pseudo.from_headers({"authorization": "Bearer tok-123"}) == pseudo.pseudonym("tok-123")
    assert pseudo.from_headers({"authorization": "bearer tok-123"}) == pseudo.pseudonym("tok-123")


def test_no_credential_gives_none() -> None:
    pseudo = Pseudonymizer("k")
    assert pseudo.from_headers({}) is None
    assert pseudo.from_headers({"authorization": "Basic dXNlcjpwYXNz"}) is None
    assert pseudo.from_headers({"x-api-key": "   ", "authorization": "Bearer "}) is None


def test_repr_does_not_show_the_key() -> None:
    assert "hunter2" not in repr(Pseudonymizer("hunter2"))


def test_ip_truncation() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348") == "2001:db8:85a3::"
    assert truncate_ip("::ffff:198.51.100.23") == "198.51.100.0"
    assert truncate_ip("testclient") is None


def test_client_address_keeps_the_full_address_when_not_truncating() -> None:
    assert client_address("203.0.113.77", truncate=False) == "203.0.113.77"
    assert client_address("203.0.113.77", truncate=True) == "203.0.113.0"
    assert client_address(None, truncate=True) is None

"""`inferwatch detect` says at start whether anyone will be paged (an on-call walk-through found
it logged nothing either way)."""

import logging
from pathlib import Path

import pytest

from inferwatch.collectors.settings import load_settings
from inferwatch.runtime import start_notifier


def test_without_a_routing_file_the_log_says_nobody_is_paged(caplog: pytest.LogCaptureFixture,
                                                             tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="inferwatch")
    assert start_notifier(load_settings(store={"path": tmp_path / "s.db"})) is None
    assert any("event=notifier_off" in r.getMessage() and "nobody is paged" in r.getMessage()
               for r in caplog.records)


def test_with_one_the_log_names_it_and_each_receivers_integrations_not_their_secrets(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="inferwatch")
    routes = tmp_path / "alerts.yaml"
    routes.write_text("""
route: {receiver: oncall}
receivers:
  - name: oncall
    webhook_configs: [{url: "http://127.0.0.1:9/hook", secret: "s3cret-signing-key"}]
    slack_configs: [{webhook_url: "https://hooks.slack.com/services/T0/B0/xyzzy-token"}]
  - name: blackhole
""")
    thread = start_notifier(load_settings(store={"path": tmp_path / "s.db"}, alerting={"config": routes}))
    assert thread is not None
    try:
        [said] = [r.getMessage() for r in caplog.records if "event=notifier_on" in r.getMessage()]
    finally:
        thread.close()
    assert f"routes={routes}" in said
    assert "oncall (slack, webhook)" in said
    assert "blackhole (no integration: dropped)" in said
    assert "s3cret" not in said
    assert "xyzzy" not in said

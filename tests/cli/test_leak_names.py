"""An output_leak incident under the default ``redacted`` capture names the secret that leaked:
``incidents show``, ``timeline`` and ``report`` all carry the agent's placeholder with its
excerpt or fingerprint (docs/privacy.md, docs/runbooks/output_leak.md)."""

from __future__ import annotations

import hashlib
import json

from inferwatch.cli import main
from inferwatch.collectors.event import EventOutput, encode_event
from inferwatch.collectors.redaction import capture_text
from inferwatch.collectors.settings import CaptureMode
from inferwatch.testing import make_event
from tests.cli.conftest import START

AWS = "AKIAZ3MXQ7R2LPWN4VYD"
PEM_BODY = "MIIEowIBAAKCAQEAq8Zr2Lp0Xv7Nw4Kt9Bs6Hd3Jm1Fc5Gy8AaZ3MXQ7R2LPWN4VYD"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
NAMED_KEY = "[SECRET:aws_access_key:AKIA…4VYD]"
NAMED_PEM = f"[SECRET:private_key:#{hashlib.sha256(PEM_BODY.encode()).hexdigest()[:8]}]"


def test_a_leak_incident_names_the_leaked_secrets(capsys, tmp_path):
    answer = capture_text(f"Sure, the deploy key is {AWS} and the signing key:\n{PEM}", CaptureMode.REDACTED)
    assert answer is not None
    assert AWS not in answer
    assert PEM_BODY not in answer
    event = make_event(START, principal="p_leaky", model="chat",
                       text="what keys does the deploy use?",
                       output=EventOutput(text=answer))
    events, store = tmp_path / "events.jsonl", str(tmp_path / "store.db")
    events.write_bytes(encode_event(event) + b"\n")
    assert main(["replay", str(events), "--store", store]) == 0
    capsys.readouterr()
    assert main(["incidents", "list", "--store", store, "--detector", "output_leak", "--json"]) == 0
    (incident,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {s["masked"] for s in incident["evidence"]["snippets"]} == {NAMED_KEY, NAMED_PEM}

    assert main(["incidents", "show", incident["id"], "--store", store]) == 0
    shown = capsys.readouterr().out
    assert NAMED_KEY in shown
    assert NAMED_PEM in shown
    assert main(["incidents", "timeline", incident["id"], "--store", store, "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    timeline = row["event"]["output"]["text"]
    assert NAMED_KEY in timeline
    assert NAMED_PEM in timeline
    assert main(["incidents", "report", incident["id"], "--store", store, "--format", "md"]) == 0
    report = capsys.readouterr().out
    assert NAMED_KEY in report
    assert NAMED_PEM in report
    assert AWS not in shown + timeline + report
    assert PEM_BODY not in shown + timeline + report

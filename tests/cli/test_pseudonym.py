"""``inferwatch pseudonym``: keys to pseudonyms and back with the agent's own HMAC key, read
the way every command reads its settings; and a candidate secret's placeholder (docs/cli.md)."""

from __future__ import annotations

import hashlib
import io
import json
import sys

import pytest

from inferwatch.agent.principal import Pseudonymizer
from inferwatch.cli import main

HMAC_KEY = "pseudonym-test-hmac-key-0123456789"
KEYS = ["k-alice-7f3a", "k-bob-91c2", "k-carol-00de"]


@pytest.fixture(autouse=True)
def _hmac_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERWATCH_AGENT__HMAC_KEY", HMAC_KEY)
    monkeypatch.delenv("INFERWATCH_CONFIG", raising=False)


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["pseudonym", *argv])
    out, err = capsys.readouterr()
    assert HMAC_KEY not in out + err  # never, whatever the command was asked
    return code, out, err


def of(key: str, hmac_key: str = HMAC_KEY) -> str:
    return Pseudonymizer(hmac_key).pseudonym(key)  # what the agent writes (agent/core.py)


def test_keys_from_stdin_get_the_agents_pseudonyms_in_order(capsys, monkeypatch):
    _stdin(monkeypatch, "\n".join(KEYS) + "\n\n")
    code, out, err = _run(capsys)
    assert code == 0
    assert out.splitlines() == [of(k) for k in KEYS]
    assert err == ""
    _stdin(monkeypatch, f"  {KEYS[0]}\r\n")  # stripped as the agent strips a header's value
    assert _run(capsys, "-", "--json")[1] == json.dumps({"line": 1, "pseudonym": of(KEYS[0])},
                                                       separators=(",", ":")) + "\n"


def test_keys_given_as_arguments_work_with_a_warning(capsys, tmp_path):
    code, out, err = _run(capsys, KEYS[1])
    assert (code, out) == (0, of(KEYS[1]) + "\n")
    assert "shell history" in err
    listed = tmp_path / "keys.txt"
    listed.write_text(KEYS[0])
    assert f"inferwatch pseudonym < {listed}" in _run(capsys, str(listed))[2]  # a file, taken as a key


def test_the_hmac_key_comes_from_the_yaml_file_as_for_every_command(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("INFERWATCH_AGENT__HMAC_KEY")
    config = tmp_path / "inferwatch.yaml"
    config.write_text('agent:\n  hmac_key: "from-the-yaml-file-0123456789"\n')
    _stdin(monkeypatch, KEYS[0] + "\n")
    code, out, err = _run(capsys, "--config", str(config))
    assert (code, out, err) == (0, of(KEYS[0], "from-the-yaml-file-0123456789") + "\n", "")
    monkeypatch.setenv("INFERWATCH_CONFIG", str(config))
    _stdin(monkeypatch, KEYS[0] + "\n")
    assert _run(capsys)[1] == of(KEYS[0], "from-the-yaml-file-0123456789") + "\n"
    assert "from-the-yaml-file" not in out + err


def test_the_public_default_key_is_said_to_be_one(capsys, monkeypatch):
    monkeypatch.delenv("INFERWATCH_AGENT__HMAC_KEY")
    _stdin(monkeypatch, KEYS[0] + "\n")
    code, _out, err = _run(capsys)
    assert code == 0
    assert "agent.hmac_key is the public default" in err


def test_find_prints_the_key_behind_a_pseudonym(capsys, monkeypatch, tmp_path):
    listed = tmp_path / "issued.txt"
    listed.write_text("\n".join(KEYS) + "\n")
    wanted = of(KEYS[1])
    code, out, err = _run(capsys, "--find", wanted, str(listed))
    assert (code, out, err) == (0, f"{wanted}  {KEYS[1]}\n", "")
    _stdin(monkeypatch, listed.read_text())
    code, out, _err = _run(capsys, "--find", f"principal:{wanted}", "--json")  # as a subject shows it
    assert json.loads(out) == {"line": 2, "pseudonym": wanted, "key": KEYS[1]}


def test_find_takes_a_pseudonym_cut_short_and_says_so(capsys, tmp_path):
    listed = tmp_path / "issued.txt"
    listed.write_text("\n".join(KEYS) + "\n")
    wanted = of(KEYS[2])
    code, out, err = _run(capsys, "--find", wanted[:8], str(listed))
    assert code == 0
    assert f"{wanted}  {KEYS[2]}" in out.splitlines()
    assert f"{wanted[:8]} is cut short (6 of 24 hex digits)" in err


def test_find_without_a_match_or_with_bad_input_is_clear(capsys, tmp_path):
    listed = tmp_path / "issued.txt"
    listed.write_text("\n".join(KEYS) + "\n")
    code, out, err = _run(capsys, "--find", "p_" + "f" * 24, str(listed))
    assert (code, out) == (1, "")
    assert "none of the 3 keys read has pseudonym" in err
    assert _run(capsys, "--find", "bob", str(listed))[0] == 2
    code, _out, err = _run(capsys, "--find", "p_0f3a", str(tmp_path / "missing.txt"))
    assert code == 2
    assert "cannot read" in err


PEM_BODY = "MIIEowIBAAKCAQEAq8Zr2Lp0Xv7Nw4Kt9Bs6Hd3Jm1Fc5Gy8AaZ3MXQ7R2LPWN4VYD"


def test_fingerprint_prints_the_placeholder_the_agent_writes_for_a_candidate(capsys, tmp_path):
    token = "q8Zr2Lp0Xv7Nw4Kt9Bs6Hd3Jm1Fc5Gy8"
    candidates = tmp_path / "candidates.txt"
    candidates.write_text(f"{token}\nAKIAZ3MXQ7R2LPWN4VYD\nhunter22\n-----BEGIN PRIVATE KEY-----\r\n"
                          f"{PEM_BODY[:40]}\r\n{PEM_BODY[40:]}\r\n-----END PRIVATE KEY-----\r\n")
    code, out, err = _run(capsys, "--fingerprint", str(candidates))
    assert code == 0
    assert out.splitlines() == [
        f"[SECRET:#{hashlib.sha256(token.encode()).hexdigest()[:8]}]",
        "[SECRET:aws_access_key:AKIA…4VYD]",
        "[SECRET]",
        f"[SECRET:private_key:#{hashlib.sha256(PEM_BODY.encode()).hexdigest()[:8]}]",
    ]
    assert "line 3: the agent writes no fingerprint" in err
    assert token not in out + err
    assert PEM_BODY[:40] not in out + err

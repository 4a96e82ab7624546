import pytest

from inferwatch.collectors.settings import CaptureMode, SettingsError, load_settings


def test_defaults():
    s = load_settings()
    assert s.bus.kind == "sqlite"
    assert s.agent.capture is CaptureMode.REDACTED
    assert s.detect.window_s == 60.0


def test_environment_nested_with_double_underscore(monkeypatch):
    monkeypatch.setenv("INFERWATCH_AGENT__CAPTURE", "full")
    monkeypatch.setenv("INFERWATCH_DETECT__WINDOW_S", "30")
    monkeypatch.setenv("INFERWATCH_AGENT__HMAC_KEY", "s3cret-key")
    s = load_settings()
    assert s.agent.capture is CaptureMode.FULL
    assert s.detect.window_s == 30.0
    assert s.agent.hmac_key.get_secret_value() == "s3cret-key"
    assert "s3cret-key" not in repr(s)
    assert "s3cret-key" not in str(s.model_dump())


def test_yaml_file_then_env_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "inferwatch.yaml"
    cfg.write_text(
        "agent:\n  service: from-yaml\n  model: m-yaml\n"
        "detect:\n  window_s: 10\n  options:\n    request_rate: {min_requests: 7}\n"
    )
    monkeypatch.setenv("INFERWATCH_AGENT__MODEL", "m-env")
    s = load_settings(cfg, detect={"window_s": 5})
    assert s.agent.service == "from-yaml"  # only in the file
    assert s.agent.model == "m-env"  # environment beats the file
    assert s.detect.window_s == 5  # flags beat both
    assert s.detect.options == {"request_rate": {"min_requests": 7}}


def test_config_from_environment_variable(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bus:\n  path: /tmp/elsewhere.db\n")
    monkeypatch.setenv("INFERWATCH_CONFIG", str(cfg))
    assert str(load_settings().bus.path) == "/tmp/elsewhere.db"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("INFERWATCH_AGENT__CAPTURE", "everything", "INFERWATCH_AGENT__CAPTURE"),
        ("INFERWATCH_DETECT__WINDOW_S", "-1", "INFERWATCH_DETECT__WINDOW_S"),
        ("INFERWATCH_BUS__KIND", "rabbit", "INFERWATCH_BUS__KIND"),
        ("INFERWATCH_AGENT__QUEUE_SIZE", "lots", "INFERWATCH_AGENT__QUEUE_SIZE"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_secret_values_are_not_echoed_in_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agent:\n  hmac_key: [hunter2zz]\n")
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert "INFERWATCH_AGENT__HMAC_KEY" in str(err.value)
    assert "hunter2zz" not in str(err.value)


def test_unknown_keys_are_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agent:\n  captur: full\n")
    with pytest.raises(SettingsError, match="INFERWATCH_AGENT__CAPTUR"):
        load_settings(cfg)


def test_bad_config_files(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: [\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SettingsError, match="mapping at the top level"):
        load_settings(scalar)

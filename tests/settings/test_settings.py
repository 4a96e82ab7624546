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
        ("INFERWATCH_DETECT__INSTANCE_ID", "pod 1", "INFERWATCH_DETECT__INSTANCE_ID.*letters, digits"),
        ("INFERWATCH_DETECT__INSTANCE_ID", "..", "INFERWATCH_DETECT__INSTANCE_ID.*not '.' or '..'"),
        ("INFERWATCH_DETECT__INSTANCE_ID", "d" * 250, "INFERWATCH_DETECT__INSTANCE_ID.*1 to 249"),
        ("INFERWATCH_DETECT__SESSION_TIMEOUT_S", "2s", "INFERWATCH_DETECT__SESSION_TIMEOUT_S"),
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


def test_a_number_where_a_secret_goes_says_to_quote_it_without_echoing_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store:\n  password: 982451653\n")
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert "'store.password'" in str(err.value)
    assert "quote it" in str(err.value)
    assert "982451653" not in str(err.value)


def test_a_number_from_the_environment_is_not_blamed_on_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("log_level: info\n")
    monkeypatch.setenv("INFERWATCH_DETECT__GROUP", "[5]")
    monkeypatch.setenv("INFERWATCH_DETECT__ENABLED", '["drift", 5]')
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert "INFERWATCH_DETECT__ENABLED" in str(err.value)
    assert "quote it" not in str(err.value)

def test_unknown_keys_are_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agent:\n  captur: full\n")
    with pytest.raises(SettingsError, match="INFERWATCH_AGENT__CAPTUR"):
        load_settings(cfg)


def test_bad_config_files(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(SettingsError, match="is a directory"):
        load_settings(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    (b"agent: [\n", "not valid YAML"),
    (b"just a string\n", "mapping at the top level"),
    ("agent:\n  service: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    (b"1: 2\n", "top-level keys must be section names"),
    (b"detect:\n  window_s: 30\ndetect:\n  window_s: 60\n", "key 'detect' is given twice"),
])
def test_a_bad_config_file_is_named_with_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(SettingsError, match=message) as err:
        load_settings(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", [
    "agent:\n  hmac: S3CRET-hmac-value\n",
    "store:\n  pasword: S3CRET-hmac-value\n",
    "bus:\n  sasl_pass: S3CRET-hmac-value\n",
    "store:\n  urls: 5\n  password: S3CRET-hmac-value\n  extra: 1\n",
])
def test_a_misspelled_secret_is_not_echoed_either(tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert "S3CRET" not in str(err.value)
    assert "no such setting" in str(err.value)


def test_credentials_in_a_url_are_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERWATCH_ALERTING__CONFIG", "x")  # valid; the bad one is below
    monkeypatch.setenv("INFERWATCH_AGENT__SPOOL_MAX_BYTES", "https://elastic:PASSW0RD@es:9200")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "PASSW0RD" not in str(err.value)
    assert "https://***@es:9200" in str(err.value)


def test_json_variables_that_do_not_parse_are_named(monkeypatch):
    monkeypatch.setenv("INFERWATCH_DETECT__OPTIONS", '{"request_rate": {min_requests: 50}}')
    with pytest.raises(SettingsError, match="INFERWATCH_DETECT__OPTIONS must be valid JSON"):
        load_settings()


def test_enabled_detectors_take_commas_from_the_environment(monkeypatch):
    monkeypatch.setenv("INFERWATCH_DETECT__ENABLED", "request_rate, drift")
    assert load_settings().detect.enabled == ["request_rate", "drift"]
    monkeypatch.setenv("INFERWATCH_DETECT__ENABLED", '["scraping"]')
    assert load_settings().detect.enabled == ["scraping"]


def test_a_misspelled_section_in_the_environment_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv("INFERWATCH_DETCT__WINDOW_S", "60")
    with pytest.raises(SettingsError, match=r"INFERWATCH_DETCT__WINDOW_S: no settings section 'detct' "
                                            r"\(did you mean INFERWATCH_DETECT__WINDOW_S\?\)"):
        load_settings()
    monkeypatch.delenv("INFERWATCH_DETCT__WINDOW_S")
    monkeypatch.setenv("INFERWATCH_LOCAL__SOMETHING", "1")  # not like any section: someone else's
    monkeypatch.setenv("INFERWATCH_PROXY__UPSTREAM", "http://127.0.0.1:1")  # the proxy's own
    assert load_settings().detect.window_s == 60


@pytest.mark.parametrize("header", ["", "x api key", "x-api-key:", "x-api-kéy"])
def test_a_principal_header_that_is_no_header_name_is_refused(monkeypatch, header: str) -> None:
    monkeypatch.setenv("INFERWATCH_AGENT__PRINCIPAL_HEADER", header)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid settings:\n  INFERWATCH_AGENT__PRINCIPAL_HEADER: must be an HTTP header name: "
        "letters, digits and - _ . ! # $ % & ' * + ^ ` | ~, no spaces or colon, e.g. x-api-key "
        f"(got {header!r})")


def test_a_principal_header_in_any_case_is_taken(monkeypatch) -> None:
    monkeypatch.setenv("INFERWATCH_AGENT__PRINCIPAL_HEADER", "X-Tenant_ID")
    assert load_settings().agent.principal_header == "X-Tenant_ID"


@pytest.mark.parametrize("content", [
    'agent:\n  hmac_key: "TOPSECRET-abc123\n',  # an unclosed quote
    "agent:\n  hmac_key: TOPSECRET-1\n  hmac_key: TOPSECRET-2\n",  # given twice
    "bus:\n  sasl_password: {TOPSECRET-pw\n",  # an unclosed flow mapping
    "store:\n  password: TOPSECRET\tx: [\n",
])
def test_a_yaml_error_says_where_without_quoting_the_file(tmp_path, content: str) -> None:
    cfg = tmp_path / "inferwatch.yaml"
    cfg.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings(cfg)
    message = str(caught.value)
    assert "not valid YAML" in message
    assert "(line " in message
    assert "TOPSECRET" not in message


@pytest.mark.parametrize(("text", "meant"), [
    ("bus:\n  bootstrap_server: localhost:9092\n",
     "bus.bootstrap_servers (INFERWATCH_BUS__BOOTSTRAP_SERVERS)"),
    ("detect:\n  windw_s: 30\n", "detect.window_s (INFERWATCH_DETECT__WINDOW_S)"),
])
def test_a_misspelled_setting_gets_the_one_it_meant(tmp_path, text, meant):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match="no such setting; did you mean") as err:
        load_settings(cfg)
    assert meant in str(err.value)


def test_a_setting_like_nothing_known_gets_no_guess(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  frobnicate: 1\n")
    with pytest.raises(SettingsError, match="no such setting; check the spelling") as err:
        load_settings(cfg)
    assert "did you mean" not in str(err.value)


def test_seconds_settings_take_durations_from_the_file_and_the_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  window_s: 1m\n  resolve_after_s: 1h30m\n  checkpoint_interval_s: 0\n"
                   "alerting:\n  give_up_after_s: 2d\n  retry_initial_s: 500ms\n")
    monkeypatch.setenv("INFERWATCH_DETECT__IDLE_CLOSE_S", "2.5")
    monkeypatch.setenv("INFERWATCH_AGENT__FLUSH_INTERVAL_S", "0.5s")
    s = load_settings(cfg)
    assert (s.detect.window_s, s.detect.resolve_after_s, s.detect.checkpoint_interval_s) == (60, 5400, 0)
    assert (s.alerting.give_up_after_s, s.alerting.retry_initial_s) == (172_800, 0.5)
    assert (s.detect.idle_close_s, s.agent.flush_interval_s) == (2.5, 0.5)
    assert load_settings(detect={"resolve_after_s": None}).detect.resolve_after_s is None


@pytest.mark.parametrize(
    ("value", "message"),
    [("30x", r"invalid duration '30x': use a number of seconds or units"),
     ("2d", r"a window lasts at most 1d \(86400 s\)"),  # a duration, but above the setting's limit
     ("-5s", "invalid duration"), ("1h 30m", "invalid duration")],
)
def test_a_bad_duration_setting_names_the_variable_and_the_forms(monkeypatch, value, message):
    monkeypatch.setenv("INFERWATCH_DETECT__WINDOW_S", value)
    with pytest.raises(SettingsError, match=rf"INFERWATCH_DETECT__WINDOW_S: .*{message}"):
        load_settings()


def test_kafka_and_elasticsearch_addresses_without_kind_mean_kafka_and_elasticsearch(tmp_path, monkeypatch):
    # An on-call walk-through set both addresses, left out `kind`, and ran on local SQLite files:
    # no event reached Kafka, no incident Elasticsearch, nobody was paged.
    monkeypatch.setenv("INFERWATCH_BUS__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("INFERWATCH_STORE__URLS", "https://es:9200")
    s = load_settings()
    assert (s.bus.kind, s.store.kind) == ("kafka", "elasticsearch")
    monkeypatch.delenv("INFERWATCH_BUS__BOOTSTRAP_SERVERS")
    monkeypatch.delenv("INFERWATCH_STORE__URLS")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bus:\n  sasl_username: u\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n"
                   "  sasl_password: p\nstore:\n  api_key: k\n")
    s = load_settings(cfg)
    assert (s.bus.kind, s.store.kind) == ("kafka", "elasticsearch")


def test_an_explicit_kind_stands_and_other_settings_leave_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERWATCH_BUS__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("INFERWATCH_BUS__KIND", "sqlite")
    monkeypatch.setenv("INFERWATCH_STORE__INDEX_PREFIX", "team-a")  # named for ES, but not an address
    s = load_settings()
    assert (s.bus.kind, s.store.kind) == ("sqlite", "sqlite")
    monkeypatch.delenv("INFERWATCH_BUS__KIND")
    monkeypatch.setenv("INFERWATCH_STORE__KIND", "sqlite")
    monkeypatch.setenv("INFERWATCH_STORE__URLS", "https://es:9200")
    s = load_settings()
    assert (s.bus.kind, s.store.kind) == ("kafka", "sqlite")
    # a dump read back keeps the kinds (the demo copies settings this way)
    assert type(s).model_validate(s.model_dump()).bus.kind == "kafka"


def test_an_error_names_where_the_value_came_from(tmp_path, monkeypatch):
    # A typo in an environment variable was reported "(or 'store.url' in inferwatch.yaml)", sending
    # the reader to a file that did not have it (on-call walk-through).
    cfg = tmp_path / "inferwatch.yaml"
    cfg.write_text("detect:\n  window_z: 60\n")
    monkeypatch.setenv("INFERWATCH_STORE__URL", "http://es:9200")
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    lines = str(err.value).splitlines()
    assert any(line.startswith("  INFERWATCH_STORE__URL: no such setting") for line in lines)
    assert any(line.startswith(f"  'detect.window_z' in {cfg} (or INFERWATCH_DETECT__WINDOW_Z): no such")
               for line in lines)


def test_a_file_named_on_the_command_line_is_the_embedded_bus_and_store(monkeypatch, tmp_path):
    from inferwatch.cli import build_parser, settings_from_args

    monkeypatch.setenv("INFERWATCH_BUS__BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("INFERWATCH_STORE__URLS", "https://es:9200")
    monkeypatch.setenv("INFERWATCH_STORE__KIND", "elasticsearch")
    args = build_parser().parse_args(["detect", "--bus", str(tmp_path / "b.db"),
                                      "--store", str(tmp_path / "s.db")])
    s = settings_from_args(args)
    assert (s.bus.kind, s.store.kind) == ("sqlite", "sqlite")
    assert s.bus.path == tmp_path / "b.db"
    assert settings_from_args(build_parser().parse_args(["detect"])).bus.kind == "kafka"

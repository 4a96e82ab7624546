"""Settings for every inferwatch component, validated once at start-up.

Sources, highest priority first: explicit overrides (CLI flags), environment variables
(``INFERWATCH_…``, nested with ``__``, e.g. ``INFERWATCH_AGENT__CAPTURE=full``), a YAML file
(``--config`` or ``INFERWATCH_CONFIG``), then defaults. Invalid values raise
:class:`SettingsError` whose message names the variable to fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from inferwatch.collectors.durations import parse_duration

ENV_PREFIX = "INFERWATCH_"
DEFAULT_HOME = Path(".inferwatch")
# A public default keeps the demo working; pseudonyms made with it can be reversed by anyone who
# can guess the API keys, so the agent warns when it is left in place.
DEFAULT_HMAC_KEY = "inferwatch-default-pseudonym-key"


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(value: str) -> str:
    """An HTTP header name (an RFC 9110 token); the agent matches it in any case."""
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError("must be an HTTP header name: letters, digits and - _ . ! # $ % & ' * + ^ ` | ~, "
                         "no spaces or colon, e.g. x-api-key")
    return value


def _seconds(value: object) -> object:
    """A ``*_s`` setting: a number of seconds or a duration such as ``30s``, ``5m``, ``1h30m``."""
    return None if value is None else parse_duration(value)


# Seconds, written as a number or a duration (``90``, ``2.5``, ``30s``, ``5m``, ``1h30m``, ``1.5h``).
Seconds = Annotated[float, BeforeValidator(_seconds)]


MAX_WINDOW_S = 86_400
"""The longest ``detect.window_s``: a day."""


def window_at_most_a_day(seconds: float) -> float:
    """``seconds`` if a window may last that long; ValueError naming the limit otherwise."""
    if seconds > MAX_WINDOW_S:
        raise ValueError(f"a window lasts at most 1d ({MAX_WINDOW_S} s)")
    return seconds


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each variable and what is wrong."""


class CaptureMode(StrEnum):
    """How much prompt and completion text the agent keeps (see docs/privacy.md)."""

    NONE = "none"
    REDACTED = "redacted"
    FULL = "full"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


def _networks(value: list[str]) -> list[str]:
    """Addresses or CIDR networks, each checked (an address is a network of one)."""
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (write 10.0.0.5, 10.0.0.0/8 or "
                             "fd00::/8)") from None
    return value


class AgentSettings(_Section):
    """The in-process agent beside the model server."""

    service: str = "unknown"
    model: str | None = None
    model_version: str | None = None
    capture: CaptureMode = CaptureMode.REDACTED
    principal_header: Annotated[str, AfterValidator(_header_name)] = "x-api-key"
    hmac_key: SecretStr = SecretStr(DEFAULT_HMAC_KEY)
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 256
    flush_interval_s: Annotated[Seconds, Field(gt=0, le=60)] = 0.2
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1 << 20
    truncate_client_ip: bool = True
    trusted_proxies: Annotated[CommaList, AfterValidator(_networks)] = Field(default_factory=list)
    """Addresses or networks of the load balancers, gateways or proxies in front of the model
    server. A request from one of them is attributed to the client its ``X-Forwarded-For`` names
    (the nearest address not itself trusted); from anywhere else the header is ignored."""
    spool_dir: Path | None = None
    """Where batches the bus refused wait on disk (docs/agent.md); ``None``: no spool, drop and count."""
    spool_max_bytes: Annotated[int, Field(ge=4096)] = 256 << 20
    spool_fsync: bool = True
    stats_log_interval_s: Annotated[Seconds, Field(ge=0)] = 60.0




KAFKA_ONLY: Final = frozenset({"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
                               "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile"})
"""Bus settings that only Kafka reads: given without ``bus.kind``, the bus is Kafka."""
ELASTICSEARCH_ONLY: Final = frozenset({"urls", "api_key", "username", "password", "ca_certs"})
"""Store settings that only Elasticsearch reads: given without ``store.kind``, the store is Elasticsearch."""


class BusSettings(_Section):
    """Where events travel: the embedded SQLite log, or Kafka (``kind`` defaults to ``kafka`` when
    ``bootstrap_servers`` or another Kafka-only setting is given, else ``sqlite``)."""

    kind: Literal["sqlite", "kafka"] = "sqlite"
    path: Path = DEFAULT_HOME / "bus.db"
    topic: str = "inferwatch.events"
    dead_letter_topic: str = "inferwatch.events.dlq"
    drift_summaries_topic: str | None = None
    """Per-window drift summaries keyed by model (scale-out); ``None`` means ``<topic>.drift``."""
    # Kafka (used when kind is "kafka")
    bootstrap_servers: CommaList = Field(default_factory=lambda: ["127.0.0.1:9092"])
    client_id: str = "inferwatch"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 4
    replication_factor: Annotated[int, Field(ge=1, le=32)] = 1
    compression: Literal["none", "gzip", "lz4", "snappy", "zstd"] = "gzip"
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = 20
    create_topics: bool = True
    """Whether a producer whose send finds no topic creates the topics (as the detector service
    does at start, with ``partitions`` and ``replication_factor``); off: only the service or your
    own tooling makes them."""

    @property
    def summaries_topic(self) -> str:
        """The drift summaries topic: ``drift_summaries_topic`` or ``<topic>.drift``."""
        return self.drift_summaries_topic or f"{self.topic}.drift"

    @model_validator(mode="after")
    def _kafka_when_its_settings_are_given(self) -> BusSettings:
        # Kafka's address (or credentials) given without ``kind`` means Kafka: left on the SQLite
        # default, agents and detectors would talk to a local file and nobody would be paged.
        if "kind" not in self.model_fields_set and not self.model_fields_set.isdisjoint(KAFKA_ONLY):
            self.kind = "kafka"
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> BusSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [name for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs "
                    + ", ".join(f"INFERWATCH_BUS__{m.upper()}" for m in missing)
                )
        return self


class StoreSettings(_Section):
    """Where incidents and searchable events are kept: SQLite, or Elasticsearch (``kind`` defaults
    to ``elasticsearch`` when ``urls``, credentials or ``ca_certs`` are given, else ``sqlite``)."""

    @model_validator(mode="after")
    def _elasticsearch_when_its_settings_are_given(self) -> StoreSettings:
        # as BusSettings: Elasticsearch's address or credentials without ``kind`` mean Elasticsearch
        if "kind" not in self.model_fields_set and not self.model_fields_set.isdisjoint(ELASTICSEARCH_ONLY):
            self.kind = "elasticsearch"
        return self

    kind: Literal["sqlite", "elasticsearch"] = "sqlite"
    path: Path = DEFAULT_HOME / "store.db"
    # Elasticsearch (used when kind is "elasticsearch")
    urls: CommaList = Field(default_factory=lambda: ["http://127.0.0.1:9200"])
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    index_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")] = "inferwatch"
    events_retention: Annotated[str, Field(pattern=r"^\d+[dhms]$")] = "30d"
    use_ilm: bool = False
    request_timeout_s: Annotated[Seconds, Field(gt=0)] = 30.0


_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _instance_id(value: str) -> str:
    """A name Kafka takes as ``group.instance.id``."""
    if not _INSTANCE_ID.fullmatch(value) or value in (".", ".."):
        raise ValueError("must be 1 to 249 ASCII letters, digits, '.', '_' or '-' (Kafka's "
                         "group.instance.id), not '.' or '..', e.g. the pod's name detector-0")
    return value


class DetectSettings(_Section):
    """The detector service: windows, grouping, and per-detector options."""

    group: str = "inferwatch-detectors"
    instance_id: Annotated[str, AfterValidator(_instance_id)] | None = None
    """A stable name for this process in ``group`` (Kafka static membership, ``group.instance.id``),
    unique within the group: e.g. a StatefulSet pod's name. A member that stops and is back within
    ``session_timeout_s`` gets its own partitions back without a rebalance, and with them its
    checkpoint; the embedded bus has one process and ignores it."""
    session_timeout_s: Annotated[Seconds, Field(ge=6, le=1800)] | None = None
    """How long the group waits for a silent member (one killed, or restarting with an
    ``instance_id``) before giving its partitions to the others (Kafka ``session.timeout.ms``);
    unset: the client's default, 45 s (10 s with brokers older than 3.0, which refuse more than
    30 s unless ``group.max.session.timeout.ms`` is raised)."""
    window_s: Annotated[Seconds, Field(gt=0), AfterValidator(window_at_most_a_day)] = 60.0
    idle_close_s: Annotated[Seconds, Field(gt=0)] = 5.0
    incident_bucket_s: Annotated[Seconds, Field(gt=0)] = 3600.0
    resolve_after_s: Annotated[Seconds, Field(ge=0)] | None = 3600.0  # 0 or None: never
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 500
    checkpoint_interval_s: Annotated[Seconds, Field(ge=0)] = 60.0
    """How often at most the detectors' state is saved to the store with the offsets it covers
    (and offsets committed); also at every stop. 0: never (offsets committed every batch)."""
    enabled: CommaList | None = None
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Serve ``/metrics`` (Prometheus) and ``/healthz`` on this port while ``inferwatch detect``
    runs (0: any free port, logged); unset: not served. See docs/oncall.md."""
    metrics_host: str = "127.0.0.1"
    """The address ``metrics_port`` listens on: loopback, or ``0.0.0.0`` for a scraper in another
    host or pod."""


class AlertingSettings(_Section):
    """On-call alerting: the routing file and how the notifier delivers."""

    config: Path | None = None
    poll_interval_s: Annotated[Seconds, Field(gt=0, le=60)] = 1.0
    retry_initial_s: Annotated[Seconds, Field(gt=0)] = 1.0
    retry_max_s: Annotated[Seconds, Field(gt=0)] = 300.0
    give_up_after_s: Annotated[Seconds, Field(gt=0)] = 86_400.0
    lookback_s: Annotated[Seconds, Field(gt=0)] = 86_400.0
    # Notifications delivered, failed or superseded this long ago are forgotten (each stream's
    # latest is kept: a restarted notifier resumes from it), and silences that ended this long
    # ago; 0 keeps everything.
    retention_days: Annotated[float, Field(ge=0)] = 30.0


class Settings(BaseSettings):
    """All of inferwatch's settings. Build them with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    agent: AgentSettings = Field(default_factory=AgentSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_path
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


_config_path: Path | None = None


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides, the environment and an optional YAML file.

    ``overrides`` are nested dicts as the CLI produces them, e.g.
    ``load_settings(bus={"path": "x.db"})``; they merge into (not replace) the other sources.
    """
    global _config_path
    _check_sections()
    path = Path(config) if config else _env_config()
    if path is not None:
        _check_yaml(path)
    _config_path = path
    try:
        base = Settings()
        if not overrides:
            return base
        # Only what was set (by the environment or the file): a default written out would count
        # as given, so an override's Kafka or Elasticsearch address would not imply its kind.
        merged = _deep_merge(base.model_dump(exclude_unset=True), overrides)
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from None
    except PydanticSettingsError as exc:  # a variable meant to hold JSON that does not parse
        raise SettingsError(_describe_env_json(exc)) from None
    finally:
        _config_path = None


def _describe_env_json(exc: PydanticSettingsError) -> str:
    """Which ``INFERWATCH_*`` variables hold what should be JSON and is not, and how it looks."""
    section = str(exc).split('field "', 1)[-1].split('"', 1)[0]
    prefix = f"{ENV_PREFIX}{section.upper()}"
    bad = []
    for name, value in sorted(os.environ.items()):
        if name.upper().startswith(prefix) and value.lstrip()[:1] in ("{", "["):
            try:
                json.loads(value)
            except ValueError:
                bad.append(name)
    names = ", ".join(bad) or f"one of the {prefix}… variables"
    return (f"invalid settings: {names} must be valid JSON (a mapping or a list), e.g. "
            f"""INFERWATCH_DETECT__OPTIONS='{{"request_rate": {{"min_requests": 50}}}}' """
            "(keys and strings in double quotes)")


_OTHER_SECTIONS = ("PROXY",)
"""``INFERWATCH_<SECTION>__…`` variables read elsewhere (``inferwatch agent proxy``'s flags)."""


def _check_sections() -> None:
    """Refuse ``INFERWATCH_DETCT__WINDOW_S``: a section misspelled would otherwise be ignored, as
    every variable of the prefix that is not a setting is (tools and tests keep their own)."""
    known = [name.upper() for name in Settings.model_fields] + list(_OTHER_SECTIONS)
    for variable in sorted(os.environ):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable[len(ENV_PREFIX):]:
            continue
        section, _, rest = variable[len(ENV_PREFIX):].partition("__")
        if section in known:
            continue
        close = difflib.get_close_matches(section, known, n=1, cutoff=0.75)
        if close:
            raise SettingsError(f"invalid settings:\n  {variable}: no settings section {section.lower()!r} "
                                f"(did you mean {ENV_PREFIX}{close[0]}__{rest}?)")


def _env_config() -> Path | None:
    value = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(value) if value else None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (it would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), without the lines of the file: PyYAML quotes the
    line it stopped at, which may be ``hmac_key: "…`` with the secret in it."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    parts = []
    for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if text:
            parts.append(f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark else text)
    return "; ".join(parts) or type(exc).__name__


def _check_yaml(path: Path) -> None:
    where = "(from --config or INFERWATCH_CONFIG)"
    if path.is_dir():
        raise SettingsError(f"config file {path} is a directory, not a YAML file {where}")
    if not path.is_file():
        raise SettingsError(f"config file {path} does not exist {where}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except UnicodeDecodeError as exc:
        raise SettingsError(f"config file {path} is not UTF-8 text (byte {exc.start}): "
                            "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from None
    except OSError as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    if data is not None and not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping at the top level")
    odd = [key for key in (data or {}) if not isinstance(key, str)]
    if odd:
        raise SettingsError(f"config file {path}: top-level keys must be section names (agent, bus, store, "
                            f"detect, alerting, log_level), got {', '.join(repr(k) for k in odd)}")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_SECRET_WORDS = ("secret", "key", "pass", "token", "auth", "credential", "sasl", "hmac", "cert",
                 "canar", "prompt")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def shown_value(name: str, value: Any) -> str:
    """`` (got <value>)`` for an error about the setting or option ``name``, or ``""`` when the
    value must not be echoed: the name sounds secret (keys, passwords, tokens; canary strings and
    system prompts, which an output-leak check exists to keep out of logs), or the value is a
    mapping or a list. A ``user:password@`` in a URL is masked."""
    if any(word in name.lower() for word in _SECRET_WORDS) or isinstance(value, dict | list | tuple):
        return ""
    return f" (got {_URL_CREDENTIALS.sub('***@', repr(value))})"


def _close_setting(loc: list[str]) -> str | None:
    """The setting a misspelled ``loc`` most likely meant (``bus.bootstrap_server`` ->
    ``bus.bootstrap_servers``), or ``None``."""
    close = close_key(Settings, loc)
    return ".".join([*loc[:-1], close]) if close else None


def close_key(model: type[BaseModel], loc: Sequence[str | int]) -> str | None:
    """The key of the model at ``loc[:-1]`` (inside ``model``, through nested models, lists of them
    and optional ones; list indexes skipped) most like the unknown ``loc[-1]``, or ``None``: what
    a "did you mean" names for a misspelled key in a settings or routing file."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current is not None else None
        current = _model_in(field.annotation) if field is not None else None
        if current is None:
            return None
    assert current is not None
    names = list(current.model_fields)
    close = difflib.get_close_matches(str(loc[-1]).lower(), names, n=1, cutoff=0.75)
    return close[0] if close else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or inside ``list[…]``, ``X | None``…"""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(exc: ValidationError, path: Path | None) -> str:
    """One line per error naming the variable (and the key in the file) and what is wrong. A value
    is echoed only for a setting that exists and is no secret, with any ``user:password@`` of a
    URL masked: a misspelled ``pasword:`` is an unknown key whose value is still a password."""
    lines = ["invalid settings:"]
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        env = ENV_PREFIX + "__".join(p.upper() for p in loc)
        dotted = ".".join(loc)
        # the environment beats the file: a variable that is set is where the value came from (a
        # list's item, detect.enabled.1, comes from INFERWATCH_DETECT__ENABLED)
        named = [ENV_PREFIX + "__".join(p.upper() for p in loc[:n]) for n in range(len(loc), 0, -1)]
        set_in_env = next((name for name in named if name in os.environ), None)
        env = set_in_env or env
        from_file = set_in_env is None and path is not None
        where = f"'{dotted}' in {path} (or {env})" if from_file else env
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            close = _close_setting(loc)
            hint = (f"did you mean {close} ({ENV_PREFIX}{close.upper().replace('.', '__')})?" if close
                    else "check the spelling;")
            lines.append(f"  {where}: no such setting; {hint} docs/configuration.md lists them")
            continue
        message = err["msg"].removeprefix("Value error, ")  # our validators' messages stand alone
        if err["type"] == "string_type" and isinstance(value, int | float | bool) and from_file:
            message += " (YAML reads an unquoted 12345, 0755, 12:30 or yes as a number or true: quote it)"
        lines.append(f"  {where}: {message}{shown_value(dotted, value)}")
    return "\n".join(lines)

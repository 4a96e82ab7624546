#!/usr/bin/env python3
"""Real Kafka, Elasticsearch and Alertmanager on loopback for inferwatch development and tests, no Docker.

Kafka and Elasticsearch come from Maven Central as jars (resolved once into deploy/local/.cache/) and
run as background JVMs that outlive this script; Alertmanager is Debian's prometheus-alertmanager
(installed with apt-get when missing and running as root). Standard library only, so it runs before
any virtualenv exists.

    python3 deploy/local/services.py up        # Kafka + Elasticsearch: resolve if needed, start, wait
    python3 deploy/local/services.py up alertmanager   # Alertmanager starts only when named
    python3 deploy/local/services.py status    # exit 0 when all requested services are healthy, 3 if not
    python3 deploy/local/services.py stop kafka && python3 deploy/local/services.py start kafka
    python3 deploy/local/services.py down      # stop all; data stays unless --clean

Importable as well (a pytest fixture can load it by path)::

    cfg = Config.from_env()
    endpoints = up(["kafka", "elasticsearch"], cfg)   # {"kafka": "127.0.0.1:19092", ...}
    up(["alertmanager"], cfg)                          # {"alertmanager": "http://127.0.0.1:19094"}
    is_healthy("kafka", cfg)
    down(["kafka"], cfg)

See deploy/local/README.md for ports, folders and versions.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVICES: tuple[str, ...] = ("kafka", "elasticsearch", "alertmanager")
# What `up`, `status` and `resolve` act on when no service is named; `down` stops them all.
DEFAULT_SERVICES: tuple[str, ...] = ("kafka", "elasticsearch")
JVM_SERVICES: tuple[str, ...] = ("kafka", "elasticsearch")
ALIASES = {
    "kafka": "kafka",
    "elasticsearch": "elasticsearch",
    "es": "elasticsearch",
    "elastic": "elasticsearch",
    "alertmanager": "alertmanager",
    "am": "alertmanager",
}

DEFAULT_KAFKA_PORT = 19092
DEFAULT_ES_PORT = 19200
# Not 19093: that is the KRaft controller port of the default Kafka (its port + 1).
DEFAULT_ALERTMANAGER_PORT = 19094
ALERTMANAGER_BINARY = "prometheus-alertmanager"
ALERTMANAGER_APT_PACKAGE = "prometheus-alertmanager"
DEFAULT_DATA_DIR = HERE / ".run"
DEFAULT_CACHE_DIR = HERE / ".cache"
DEFAULT_TIMEOUT = 300.0
HOST = "127.0.0.1"

EXIT_UNHEALTHY = 3
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 30.0
MAX_LOG_BYTES = 50 * 1024 * 1024

Log = Callable[[str], None]


class ServiceError(RuntimeError):
    """A service could not be resolved, started, stopped or made healthy."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the services listen and keep their files. Ports are on 127.0.0.1."""

    kafka_port: int = DEFAULT_KAFKA_PORT
    es_port: int = DEFAULT_ES_PORT
    alertmanager_port: int = DEFAULT_ALERTMANAGER_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    timeout: float = DEFAULT_TIMEOUT
    kafka_heap: str = "1g"
    es_heap: str = "1g"
    cluster_name: str = "inferwatch-local"

    @classmethod
    def from_env(cls, **overrides: Any) -> "Config":
        """Defaults, then INFERWATCH_LOCAL_* variables, then the non-None keyword arguments."""
        values: dict[str, Any] = {}
        env = os.environ
        if env.get("INFERWATCH_LOCAL_KAFKA_PORT"):
            values["kafka_port"] = int(env["INFERWATCH_LOCAL_KAFKA_PORT"])
        if env.get("INFERWATCH_LOCAL_ES_PORT"):
            values["es_port"] = int(env["INFERWATCH_LOCAL_ES_PORT"])
        if env.get("INFERWATCH_LOCAL_ALERTMANAGER_PORT"):
            values["alertmanager_port"] = int(env["INFERWATCH_LOCAL_ALERTMANAGER_PORT"])
        if env.get("INFERWATCH_LOCAL_DATA_DIR"):
            values["data_dir"] = Path(env["INFERWATCH_LOCAL_DATA_DIR"])
        if env.get("INFERWATCH_LOCAL_CACHE_DIR"):
            values["cache_dir"] = Path(env["INFERWATCH_LOCAL_CACHE_DIR"])
        if env.get("INFERWATCH_LOCAL_TIMEOUT"):
            values["timeout"] = float(env["INFERWATCH_LOCAL_TIMEOUT"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("data_dir", "cache_dir"):
            if key in values:
                values[key] = Path(values[key]).expanduser().resolve()
        return cls(**values)

    @property
    def kafka_controller_port(self) -> int:
        return self.kafka_port + 1

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def es_url(self) -> str:
        return f"http://{HOST}:{self.es_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{HOST}:{self.alertmanager_port}"

    def port(self, service: str) -> int:
        """The main port of a service (the one its health check and clients use)."""
        return {"kafka": self.kafka_port, "elasticsearch": self.es_port}.get(service, self.alertmanager_port)

    def with_port(self, service: str, port: int) -> "Config":
        if service == "kafka":
            return dataclasses.replace(self, kafka_port=port)
        if service == "elasticsearch":
            return dataclasses.replace(self, es_port=port)
        return dataclasses.replace(self, alertmanager_port=port)


# --------------------------------------------------------------------------- versions and paths


def _pom(service: str) -> Path:
    return HERE / service / "pom.xml"


def version(service: str) -> str:
    """The version pinned in deploy/local/<service>/pom.xml; Alertmanager's is the installed one."""
    if service == "alertmanager":
        return _alertmanager_version()
    prop = {"kafka": "kafka.version", "elasticsearch": "elasticsearch.version"}[service]
    match = re.search(rf"<{re.escape(prop)}>\s*([^<\s]+)\s*</{re.escape(prop)}>", _pom(service).read_text())
    if not match:
        raise ServiceError(f"{_pom(service)} has no <{prop}> property")
    return match.group(1)


def _home(service: str, cfg: Config) -> Path:
    return cfg.data_dir / service


def log_path(service: str, cfg: Config) -> Path:
    return cfg.data_dir / f"{service}.log"


def _pid_path(service: str, cfg: Config) -> Path:
    return cfg.data_dir / f"{service}.pid"


def _state_path(service: str, cfg: Config) -> Path:
    return cfg.data_dir / f"{service}.json"


def _cache_root(service: str, cfg: Config) -> Path:
    return cfg.cache_dir / f"{service}-{version(service)}"


def endpoint(service: str, cfg: Config) -> str:
    if service == "kafka":
        return cfg.kafka_bootstrap
    return cfg.es_url if service == "elasticsearch" else cfg.alertmanager_url


def normalize_services(names: Iterable[str] | None, default: Sequence[str] = DEFAULT_SERVICES) -> list[str]:
    """['es'] -> ['elasticsearch']; None or empty -> ``default`` (Kafka and Elasticsearch).

    Keeps the canonical order.
    """
    if not names:
        return list(default)
    wanted = set()
    for name in names:
        key = ALIASES.get(name.lower())
        if key is None:
            raise ServiceError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
        wanted.add(key)
    return [s for s in SERVICES if s in wanted]


# --------------------------------------------------------------------------- tools


def _java_tool(name: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / name).exists():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        hint = " (a JDK, e.g. Debian's openjdk-17-jdk-headless)" if name == "javac" else ""
        raise ServiceError(f"{name} not found on PATH or in JAVA_HOME{hint}; Java 17 or newer is needed")
    return found


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise ServiceError(f"cannot tell the Java version from: {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _digest(paths: Iterable[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        h.update(str(path.relative_to(HERE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------- resolution


def resolve(service: str, cfg: Config, log: Log = print) -> Path:
    """Jars of the service in <cache>/<service>-<version>/lib, fetched with Maven unless already there."""
    root = _cache_root(service, cfg)
    lib = root / "lib"
    marker = lib / ".complete"
    want = _digest([_pom(service)])
    if marker.exists() and marker.read_text().strip() == want:
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceError("mvn (Apache Maven 3) not found on PATH; it fetches the service jars once")
    log(f"{service}: resolving {service} {version(service)} from Maven Central (first run only) ...")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "lib.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(_pom(service)),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(tmp.glob("*.jar")):
        out = (proc.stdout + proc.stderr).strip().splitlines()
        raise ServiceError(
            f"{service}: Maven could not resolve the jars (exit {proc.returncode}):\n" + "\n".join(out[-30:])
        )
    (tmp / ".complete").write_text(want + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    log(f"{service}: {len(list(lib.glob('*.jar')))} jars in {lib} ({time.monotonic() - started:.1f} s)")
    return lib


def _es_classes(cfg: Config, lib: Path, log: Log) -> Path:
    """Compiles the small Elasticsearch launcher in deploy/local/elasticsearch/src once per change."""
    sources = sorted((HERE / "elasticsearch" / "src").rglob("*.java"))
    root = _cache_root("elasticsearch", cfg)
    classes = root / "classes"
    marker = classes / ".complete"
    want = _digest(sources, extra=(lib / ".complete").read_text())
    if marker.exists() and marker.read_text().strip() == want:
        return classes
    javac = _java_tool("javac")
    tmp = root / "classes.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        javac,
        "-nowarn",
        "-encoding",
        "UTF-8",
        "--release",
        "17",
        "-d",
        str(tmp),
        "-cp",
        str(lib / "*"),
        *map(str, sources),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServiceError(
            "elasticsearch: compiling the launcher failed:\n" + (proc.stdout + proc.stderr)[-4000:]
        )
    (tmp / ".complete").write_text(want + "\n")
    shutil.rmtree(classes, ignore_errors=True)
    tmp.rename(classes)
    log("elasticsearch: compiled the launcher")
    return classes


# --------------------------------------------------------------------------- configuration


KAFKA_LOG4J = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
# the broker dumps every config of its internal clients at INFO; keep the log readable
logger.kafkaconfig.name = kafka.server.KafkaConfig
logger.kafkaconfig.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
"""


def _kafka_properties(cfg: Config) -> str:
    home = _home("kafka", cfg)
    lines = [
        "# Written by deploy/local/services.py on every start; edit that script, not this file.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{cfg.kafka_controller_port}",
        f"listeners=PLAINTEXT://{HOST}:{cfg.kafka_port},CONTROLLER://{HOST}:{cfg.kafka_controller_port}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{cfg.kafka_port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={home / 'data'}",
        "num.partitions=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "auto.create.topics.enable=true",
        "delete.topic.enable=true",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=168",
        "log.segment.bytes=67108864",
        "num.network.threads=2",
        "num.io.threads=4",
        "",
    ]
    return "\n".join(lines)


def _prepare_kafka(cfg: Config, lib: Path, java: str, log: Log) -> list[str]:
    home = _home("kafka", cfg)
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(_kafka_properties(cfg))
    log4j = home / "log4j2.properties"
    log4j.write_text(KAFKA_LOG4J)
    base = [
        java,
        "-Xms512m",
        f"-Xmx{cfg.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={home / 'logs'}",
        "-cp",
        str(lib / "*"),
    ]

    if not (home / "data" / "meta.properties").exists():
        id_file = home / "cluster.id"
        if id_file.exists() and id_file.read_text().strip():
            cluster_id = id_file.read_text().strip()
        else:
            proc = subprocess.run(
                [*base, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True, check=False
            )
            ids = [
                ln.strip()
                for ln in proc.stdout.splitlines()
                if re.fullmatch(r"[A-Za-z0-9_-]{22}", ln.strip())
            ]
            if proc.returncode != 0 or not ids:
                raise ServiceError(
                    f"kafka: StorageTool random-uuid failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
                )
            cluster_id = ids[-1]
            id_file.write_text(cluster_id + "\n")
        proc = subprocess.run(
            [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(f"kafka: StorageTool format failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        log(f"kafka: formatted storage in {home / 'data'} (cluster id {cluster_id})")
    return [
        *base,
        "-Dinferwatch.local.service=kafka",
        f"-Dinferwatch.local.home={home}",
        "kafka.Kafka",
        str(props),
    ]


def _prepare_elasticsearch(cfg: Config, lib: Path, java: str, log: Log) -> list[str]:
    home = _home("elasticsearch", cfg)
    classes = _es_classes(cfg, lib, log)
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (home / "http.port").unlink()
    return [
        java,
        f"-Xms{cfg.es_heap}",
        f"-Xmx{cfg.es_heap}",
        "-XX:+UseG1GC",
        "-XX:+HeapDumpOnOutOfMemoryError",
        f"-XX:HeapDumpPath={home / 'tmp'}",
        f"-Djava.io.tmpdir={home / 'tmp'}",
        "-Dfile.encoding=UTF-8",
        "-Djava.awt.headless=true",
        "-Dlog4j2.formatMsgNoLookups=true",
        "-Dlog4j2.shutdownHookEnabled=false",
        "-Des.networkaddress.cache.ttl=60",
        "-Djna.nosys=true",
        "-Dio.netty.recycler.maxCapacityPerThread=0",
        "-Dinferwatch.local.service=elasticsearch",
        f"-Dinferwatch.local.home={home}",
        "-cp",
        f"{classes}{os.pathsep}{lib / '*'}",
        "org.inferwatch.local.EsMain",
        str(home),
        str(cfg.es_port),
        cfg.cluster_name,
    ]


# --------------------------------------------------------------------------- Alertmanager


ALERTMANAGER_GO_MODULE = "github.com/prometheus/alertmanager/cmd/alertmanager"
ALERTMANAGER_GO_VERSION = "v0.25.0"  # the release Debian 12 packages


def _alertmanager_go_bin() -> Path:
    """Where an Alertmanager built from source with Go is kept (when apt-get cannot be used)."""
    cache = Path(os.environ.get("INFERWATCH_LOCAL_CACHE_DIR") or DEFAULT_CACHE_DIR)
    return cache / f"alertmanager-{ALERTMANAGER_GO_VERSION}" / "alertmanager"


def _alertmanager_binary() -> str | None:
    candidates = (f"/usr/bin/{ALERTMANAGER_BINARY}", str(_alertmanager_go_bin()))
    return shutil.which(ALERTMANAGER_BINARY) or next((p for p in candidates if Path(p).exists()), None)


def _build_alertmanager_with_go(log: Log) -> str | None:
    """``go install`` the same Alertmanager release from the Go module proxy (about 2 minutes)."""
    go = shutil.which("go")
    if not go:
        return None
    target = _alertmanager_go_bin()
    target.parent.mkdir(parents=True, exist_ok=True)
    module = f"{ALERTMANAGER_GO_MODULE}@{ALERTMANAGER_GO_VERSION}"
    log(f"alertmanager: building {module} with go install (no root for apt-get) ...")
    env = {**os.environ, "GOBIN": str(target.parent)}
    proc = subprocess.run([go, "install", module], capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0 or not target.exists():
        out = (proc.stdout + proc.stderr).strip().splitlines()
        log("alertmanager: go install failed:\n" + "\n".join(out[-20:]))
        return None
    return str(target)


def _alertmanager_version() -> str:
    binary = _alertmanager_binary()
    if not binary:
        return "(not installed)"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "(unknown version)"


def _install_alertmanager(log: Log) -> str:
    """The Alertmanager binary: Debian's, installed with apt-get when missing and we are root;
    otherwise built from the same release's source with ``go install``."""
    binary = _alertmanager_binary()
    if binary:
        return binary
    command = f"apt-get install -y {ALERTMANAGER_APT_PACKAGE}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        built = _build_alertmanager_with_go(log)
        if built:
            return built
        raise ServiceError(
            f"alertmanager: {ALERTMANAGER_BINARY} is not installed; install it with "
            f"'sudo {command}' (Debian/Ubuntu) or install Go so it can be built from source, "
            "then run this again"
        )
    log(f"alertmanager: {ALERTMANAGER_BINARY} not found; running {command} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(command.split(), capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, check=False, env=env)
        proc = subprocess.run(command.split(), capture_output=True, text=True, check=False, env=env)
    binary = _alertmanager_binary()
    if proc.returncode != 0 or not binary:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        raise ServiceError(
            f"alertmanager: '{command}' failed (exit {proc.returncode}):\n" + "\n".join(out[-20:])
        )
    log(f"alertmanager: installed {ALERTMANAGER_BINARY} {_alertmanager_version()}")
    return binary


ALERTMANAGER_CONFIG = """\
# Written by deploy/local/services.py on every start; edit that script, not this file.
# Alerts are kept and served by the API (GET /api/v2/alerts) and routed to a receiver that
# sends nothing: tests read what Alertmanager holds.
route:
  receiver: "null"
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: "null"
"""


def _alertmanager_config_path(cfg: Config) -> Path:
    return _home("alertmanager", cfg) / "alertmanager.yml"


def _prepare_alertmanager(cfg: Config, binary: str) -> list[str]:
    home = _home("alertmanager", cfg)
    (home / "data").mkdir(parents=True, exist_ok=True)
    _alertmanager_config_path(cfg).write_text(ALERTMANAGER_CONFIG)
    return [
        binary,
        f"--config.file={_alertmanager_config_path(cfg)}",
        f"--storage.path={home / 'data'}",
        f"--web.listen-address={HOST}:{cfg.alertmanager_port}",
        "--cluster.listen-address=",  # empty: no gossip, a single instance
        "--log.level=info",
    ]


# --------------------------------------------------------------------------- health probes


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def _kafka_call(sock: socket.socket, api_key: int, api_version: int, correlation: int, body: bytes) -> bytes:
    client_id = b"inferwatch-local"
    header = struct.pack(">hhih", api_key, api_version, correlation, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= 16 * 1024 * 1024:
        raise ValueError(f"implausible response size {size}")
    payload = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", payload, 0)
    if got != correlation:
        raise ValueError(f"correlation id {got} != {correlation}")
    return payload[4:]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value[0] if len(value) == 1 else value

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        raw = self.data[self.pos : self.pos + n]
        if len(raw) != n:
            raise ValueError("truncated string")
        self.pos += n
        return raw.decode()

    def done(self) -> bool:
        return self.pos == len(self.data)


def kafka_probe(host: str = HOST, port: int = DEFAULT_KAFKA_PORT, timeout: float = 3.0) -> dict[str, Any]:
    """Sends ApiVersions v0, then Metadata v4 for no topics; raises unless both answers are well formed.

    Returns {"api_versions": n, "brokers": [(id, host, port)], "cluster_id": str, "controller_id": int}.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _Reader(_kafka_call(sock, 18, 0, 1, b""))  # ApiVersions v0: empty body
        error = r.take(">h")
        if error != 0:
            raise ValueError(f"ApiVersions error code {error}")
        count = r.take(">i")
        apis = {}
        for _ in range(count):
            key, lo, hi = r.take(">hhh")
            apis[key] = (lo, hi)
        if not r.done() or 3 not in apis:
            raise ValueError("malformed ApiVersions response")
        result: dict[str, Any] = {"api_versions": len(apis), "brokers": [], "cluster_id": None}
        lo, hi = apis[3]
        if not lo <= 4 <= hi:  # Metadata v4 is the last version without tagged fields
            return result
        body = struct.pack(">ib", 0, 0)  # topics: empty array (not null = all); allow_auto_topic_creation
        r = _Reader(_kafka_call(sock, 3, 4, 2, body))
        r.take(">i")  # throttle_time_ms
        for _ in range(r.take(">i")):
            node_id = r.take(">i")
            bhost = r.string()
            bport = r.take(">i")
            r.string()  # rack
            result["brokers"].append((node_id, bhost, bport))
        result["cluster_id"] = r.string()
        result["controller_id"] = r.take(">i")
        if r.take(">i") != 0 or not r.done():
            raise ValueError("malformed Metadata response")
        if not result["brokers"]:
            raise ValueError("Metadata lists no broker yet")
        return result


def _http_json(url: str, timeout: float = 3.0) -> Any:
    # loopback only: never through an HTTP(S)_PROXY from the environment
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def alertmanager_probe(url: str, timeout: float = 3.0) -> str:
    """GET /-/ready; raises unless it answers 200. Returns the answer's text."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url.rstrip('/')}/-/ready", timeout=timeout) as resp:
        if resp.status != 200:
            raise ValueError(f"/-/ready answered {resp.status}")
        return str(resp.read(200).decode(errors="replace").strip())


def elasticsearch_probe(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """GET /_cluster/health; raises unless the status is green or yellow."""
    health = _http_json(f"{url.rstrip('/')}/_cluster/health?timeout={max(1, int(timeout))}s", timeout + 2)
    if health.get("status") not in ("green", "yellow"):
        raise ValueError(f"cluster health is {health.get('status')!r}")
    return dict(health)


def _probe(service: str, cfg: Config) -> tuple[bool, str]:
    try:
        if service == "kafka":
            info = kafka_probe(HOST, cfg.kafka_port)
            brokers = ", ".join(f"{h}:{p}" for _, h, p in info["brokers"]) or "?"
            return True, f"ApiVersions ok ({info['api_versions']} APIs), brokers [{brokers}]"
        if service == "alertmanager":
            return True, f"/-/ready: {alertmanager_probe(cfg.alertmanager_url) or 'OK'}"
        health = elasticsearch_probe(cfg.es_url)
        return True, f"cluster {health.get('cluster_name')!r} {health['status']}"
    except (OSError, ValueError, struct.error, urllib.error.URLError, json.JSONDecodeError) as e:
        return False, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- processes


def _proc_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        pass
    out = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _markers(service: str, cfg: Config) -> list[str]:
    """What a command line of this service for this data dir contains (JVMs carry a -D marker)."""
    if service == "alertmanager":
        return ["alertmanager", f"--config.file={_alertmanager_config_path(cfg)}"]
    return [f"-Dinferwatch.local.service={service}", str(_home(service, cfg))]


def _ours(pid: int, service: str, cfg: Config) -> bool:
    cmd = _proc_cmdline(pid) or ""
    return all(marker in cmd for marker in _markers(service, cfg))


def _running_pids(service: str, cfg: Config) -> list[int]:
    """Pids of this service for this data dir: from the pid file, else found in /proc."""
    pids: list[int] = []
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(_pid_path(service, cfg).read_text().split()[0])
        if _alive(pid) and _ours(pid, service, cfg):
            pids.append(pid)
    proc = Path("/proc")
    if not pids and proc.is_dir():
        markers = _markers(service, cfg)
        for entry in proc.iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if all(m in cmd for m in markers) and _alive(int(entry.name)):
                        pids.append(int(entry.name))
    return pids


def _read_state(service: str, cfg: Config) -> dict[str, Any]:
    try:
        return dict(json.loads(_state_path(service, cfg).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _effective(service: str, cfg: Config) -> Config:
    """The config a running service was started with (its ports), else cfg."""
    state = _read_state(service, cfg)
    if not state or not _running_pids(service, cfg):
        return cfg
    return cfg.with_port(service, int(state.get("port", cfg.port(service))))


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def _locked(cfg: Config) -> Iterator[None]:
    """One up/down at a time per data dir (e.g. parallel pytest workers)."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.data_dir / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _command(service: str, cfg: Config, log: Log) -> list[str]:
    """The command line that runs the service, after fetching or installing what it needs."""
    if service == "alertmanager":
        return _prepare_alertmanager(cfg, _install_alertmanager(log))
    java = _java_tool("java")
    if _java_major(java) < 17:
        raise ServiceError(f"{java} is older than Java 17, which Kafka and Elasticsearch need")
    lib = resolve(service, cfg, log)
    prepare = _prepare_kafka if service == "kafka" else _prepare_elasticsearch
    return prepare(cfg, lib, java, log)


def _start(service: str, cfg: Config, log: Log) -> int:
    ports = [cfg.kafka_port, cfg.kafka_controller_port] if service == "kafka" else [cfg.port(service)]
    busy = [p for p in ports if _port_in_use(p)]
    if busy:
        raise ServiceError(
            f"{service}: port {busy[0]} on {HOST} is already taken by another process; "
            f"pick other ports (--kafka-port / --es-port / --alertmanager-port or INFERWATCH_LOCAL_*_PORT)"
        )
    cmd = _command(service, cfg, log)
    _home(service, cfg).mkdir(parents=True, exist_ok=True)
    logfile = log_path(service, cfg)
    if logfile.exists() and logfile.stat().st_size > MAX_LOG_BYTES:
        logfile.replace(logfile.with_suffix(".log.1"))
    with logfile.open("ab") as out:
        out.write(
            f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service} "
            f"{version(service)} =====\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=_home(service, cfg),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _pid_path(service, cfg).write_text(f"{proc.pid}\n")
    state = {"pid": proc.pid, "port": ports[0], "version": version(service), "started": time.time()}
    if service == "kafka":
        state["controller_port"] = cfg.kafka_controller_port
    _state_path(service, cfg).write_text(json.dumps(state, indent=2) + "\n")
    log(f"{service}: started {version(service)} as pid {proc.pid} (log: {logfile})")
    return proc.pid


def _stop(service: str, cfg: Config, log: Log, grace: float = STOP_GRACE_SECONDS) -> bool:
    pids = _running_pids(service, cfg)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # started with its own session: pgid == pid
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.2)
    for pid in pids:
        log(f"{service}: pid {pid} ignored SIGTERM for {grace:.0f} s, sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = bool(_read_state(service, cfg)) or bool(pids)
    for path in (_pid_path(service, cfg), _state_path(service, cfg)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stopped


# --------------------------------------------------------------------------- public API


def is_healthy(service: str, cfg: Config | None = None) -> bool:
    """True when the service answers on its port (Kafka: ApiVersions + Metadata; ES: health green/yellow)."""
    cfg = cfg or Config.from_env()
    service = normalize_services([service])[0]
    return _probe(service, _effective(service, cfg))[0]


def status(services: Sequence[str] | None = None, cfg: Config | None = None) -> dict[str, dict[str, Any]]:
    """{service: {"running", "pid", "healthy", "detail", "endpoint", "version", "log"}}."""
    cfg = cfg or Config.from_env()
    out: dict[str, dict[str, Any]] = {}
    for service in normalize_services(services):
        eff = _effective(service, cfg)
        pids = _running_pids(service, cfg)
        healthy, detail = _probe(service, eff)
        if healthy and not pids:
            detail += " (but not started by this tool for this data dir)"
        out[service] = {
            "running": bool(pids),
            "pid": pids[0] if pids else None,
            "healthy": healthy,
            "detail": detail,
            "endpoint": endpoint(service, eff),
            "version": version(service),
            "log": str(log_path(service, cfg)),
        }
    return out


def up(
    services: Sequence[str] | None = None,
    cfg: Config | None = None,
    *,
    clean: bool = False,
    log: Log = print,
) -> dict[str, str]:
    """Starts the services (resolving jars on first use) and waits until healthy.

    Returns {service: endpoint}. Raises ServiceError, with the log tail, when one fails; a service
    that failed to become healthy is stopped again so that no stray JVM is left behind.
    """
    cfg = cfg or Config.from_env()
    wanted = normalize_services(services)
    with _locked(cfg):
        if clean:
            for service in wanted:
                _stop(service, cfg, log)
                shutil.rmtree(_home(service, cfg), ignore_errors=True)
                log(f"{service}: removed its data ({_home(service, cfg)})")
        starting: dict[str, tuple[int, float]] = {}
        for service in wanted:
            pids = _running_pids(service, cfg)
            if pids:
                state = _read_state(service, cfg)
                requested = cfg.port(service)
                if state.get("port") not in (None, requested):
                    raise ServiceError(
                        f"{service}: already running on port {state['port']}, not {requested}; "
                        f"run 'down' first to move it"
                    )
                if _probe(service, cfg)[0]:
                    log(f"{service}: already running and healthy (pid {pids[0]})")
                    continue
                log(f"{service}: running (pid {pids[0]}) but not healthy yet; waiting")
                starting[service] = (pids[0], time.monotonic())
                continue
            starting[service] = (_start(service, cfg, log), time.monotonic())
        _wait_healthy(starting, cfg, log)
    endpoints = {s: endpoint(s, cfg) for s in wanted}
    if "elasticsearch" in wanted:
        endpoints["elasticsearch"] = _es_bound_url(cfg)
    return endpoints


def _es_bound_url(cfg: Config) -> str:
    """The address the node reports it bound (it writes it to <home>/http.port), else the configured one."""
    with contextlib.suppress(OSError):
        bound = (_home("elasticsearch", cfg) / "http.port").read_text().strip()
        if bound:
            return f"http://{bound}"
    return cfg.es_url


def _wait_healthy(starting: dict[str, tuple[int, float]], cfg: Config, log: Log) -> None:
    deadline = time.monotonic() + cfg.timeout
    pending = dict(starting)
    while pending:
        for service, (pid, began) in list(pending.items()):
            ok, detail = _probe(service, cfg)
            if ok:
                log(f"{service}: healthy {time.monotonic() - began:.1f} s after start ({detail})")
                del pending[service]
            elif not _alive(pid):
                _stop(service, cfg, log)
                raise ServiceError(
                    f"{service}: the process exited before it became healthy. "
                    f"Last lines of {log_path(service, cfg)}:\n{_tail(log_path(service, cfg))}"
                )
            elif time.monotonic() > deadline:
                tail = _tail(log_path(service, cfg))
                _stop(service, cfg, log)
                raise ServiceError(
                    f"{service}: not healthy within {cfg.timeout:.0f} s (last probe: {detail}); stopped it. "
                    f"Last lines of {log_path(service, cfg)}:\n{tail}"
                )
        if pending:
            time.sleep(0.5)


def down(
    services: Sequence[str] | None = None,
    cfg: Config | None = None,
    *,
    clean: bool = False,
    log: Log = print,
) -> None:
    """Stops the services (SIGTERM, then SIGKILL after a grace period). Data stays unless clean=True.

    With no services named it stops all of them, Alertmanager included.
    """
    cfg = cfg or Config.from_env()
    with _locked(cfg):
        for service in normalize_services(services, default=SERVICES):
            if _stop(service, cfg, log):
                log(f"{service}: stopped")
            elif services or service in DEFAULT_SERVICES:  # quiet about an optional one not asked for
                log(f"{service}: not running")
            if clean:
                shutil.rmtree(_home(service, cfg), ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    log_path(service, cfg).unlink()
                log(f"{service}: removed its data and log")


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="kafka, elasticsearch (or es), alertmanager (or am); default: kafka and elasticsearch "
        "(down: all)",
    )
    common.add_argument("--only", action="append", choices=sorted(ALIASES), help="same as naming a SERVICE")
    common.add_argument(
        "--kafka-port",
        type=int,
        help=f"Kafka PLAINTEXT port (env INFERWATCH_LOCAL_KAFKA_PORT, default {DEFAULT_KAFKA_PORT}); "
        "the KRaft controller takes the next port",
    )
    common.add_argument(
        "--es-port",
        type=int,
        help=f"Elasticsearch HTTP port (env INFERWATCH_LOCAL_ES_PORT, default {DEFAULT_ES_PORT}); "
        "its transport port is picked from +100..+199",
    )
    common.add_argument(
        "--alertmanager-port",
        type=int,
        help="Alertmanager HTTP port (env INFERWATCH_LOCAL_ALERTMANAGER_PORT, "
        f"default {DEFAULT_ALERTMANAGER_PORT})",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        help="data, logs and pid files (env INFERWATCH_LOCAL_DATA_DIR, default deploy/local/.run)",
    )
    common.add_argument(
        "--timeout",
        type=float,
        help=f"seconds to wait for health (env INFERWATCH_LOCAL_TIMEOUT, default {DEFAULT_TIMEOUT:.0f})",
    )

    parser = argparse.ArgumentParser(
        prog="services.py",
        description="Local Kafka and Elasticsearch (from Maven Central) and Alertmanager (Debian's) "
        "for inferwatch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("up", "start (resolving jars on first use) and wait until healthy"),
        ("start", "same as up"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("--clean", action="store_true", help="wipe the services' data before starting")
    for name, text in (("down", "stop; data is kept unless --clean"), ("stop", "same as down")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("--clean", action="store_true", help="also delete the services' data and logs")
    sub.add_parser("restart", parents=[common], help="down, then up (data kept)")
    sub.add_parser(
        "status", parents=[common], help="what runs and whether healthy; exit 3 unless all healthy"
    )
    p = sub.add_parser("logs", parents=[common], help="print the last lines of the services' logs")
    p.add_argument("-n", "--lines", type=int, default=LOG_TAIL_LINES)
    sub.add_parser("env", parents=[common], help="print shell exports of the endpoints")
    sub.add_parser(
        "resolve",
        parents=[common],
        help="only fetch the jars (e.g. to warm a CI cache); alertmanager: install it if missing",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = Config.from_env(
            kafka_port=args.kafka_port,
            es_port=args.es_port,
            alertmanager_port=args.alertmanager_port,
            data_dir=args.data_dir,
            timeout=args.timeout,
        )
        named = [*args.services, *(args.only or [])]
        stopping = args.command in ("down", "stop")
        wanted = normalize_services(named, default=SERVICES if stopping else DEFAULT_SERVICES)
        if args.command in ("up", "start"):
            for service, where in up(wanted, cfg, clean=args.clean).items():
                print(f"{service}: {where}")
        elif args.command in ("down", "stop"):
            down(named or None, cfg, clean=args.clean)
        elif args.command == "restart":
            down(wanted, cfg)
            for service, where in up(wanted, cfg).items():
                print(f"{service}: {where}")
        elif args.command == "status":
            report = status(wanted, cfg)
            for service, st in report.items():
                state = "running" if st["running"] else "stopped"
                health = "healthy" if st["healthy"] else "not healthy"
                pid = f" pid {st['pid']}" if st["pid"] else ""
                print(
                    f"{service}: {state}{pid}, {health} at {st['endpoint']} ({st['detail']}); "
                    f"{service} {st['version']}, log {st['log']}"
                )
            return 0 if all(st["healthy"] for st in report.values()) else EXIT_UNHEALTHY
        elif args.command == "logs":
            for service in wanted:
                print(f"==> {log_path(service, cfg)} <==\n{_tail(log_path(service, cfg), args.lines)}")
        elif args.command == "env":
            if "kafka" in wanted:
                print(f"export INFERWATCH_LOCAL_KAFKA_BOOTSTRAP={_effective('kafka', cfg).kafka_bootstrap}")
            if "elasticsearch" in wanted:
                print(f"export INFERWATCH_LOCAL_ES_URL={_effective('elasticsearch', cfg).es_url}")
            if "alertmanager" in wanted:
                print(
                    "export INFERWATCH_LOCAL_ALERTMANAGER_URL="
                    f"{_effective('alertmanager', cfg).alertmanager_url}"
                )
        elif args.command == "resolve":
            for service in wanted:
                if service == "alertmanager":
                    print(f"{service}: {_install_alertmanager(print)}")
                    continue
                lib = resolve(service, cfg)
                if service == "elasticsearch":
                    _es_classes(cfg, lib, print)
                print(f"{service}: {lib}")
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

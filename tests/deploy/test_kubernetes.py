"""deploy/kubernetes and deploy/systemd: well-formed, wired to each other, and their commands valid.

The proxy's arguments are parsed by the real ``inferwatch`` parser and its environment by the real
settings loader, so a renamed flag or setting fails here rather than in a cluster.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferwatch.cli import build_parser
from inferwatch.collectors.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "inferwatch-proxy.service"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in found, f"{key} defined twice"
                found[key] = doc
    return found


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    [match] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return match


def environment(objects: dict[tuple[str, str], dict[str, Any]], spec: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
        if "secretRef" in source:
            env.update(objects[("Secret", source["secretRef"]["name"])]["stringData"])
    for item in spec.get("env", []):
        if "valueFrom" in item:  # the pod's own name, as Kubernetes fills it in
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, item
            env[item["name"]] = "pod-0"
        else:
            env[item["name"]] = item["value"]
    return env


def test_model_server_with_the_proxy_as_sidecar(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = objects[("Deployment", "model-server")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    model = container(deployment, "model-server")
    proxy = container(deployment, "inferwatch-proxy")

    args = build_parser().parse_args(proxy["args"])
    assert (args.command, args.action) == ("agent", "proxy")
    assert args.listen == "0.0.0.0:8080"
    # The model server listens on the pod's loopback only, on the port the proxy forwards to.
    host = model["args"][model["args"].index("--host") + 1]
    port = model["args"][model["args"].index("--port") + 1]
    assert host == "127.0.0.1"
    assert args.upstream == f"http://127.0.0.1:{port}"

    [http] = proxy["ports"]
    assert (http["name"], http["containerPort"]) == ("http", 8080)
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/-/healthz", "port": "http"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/-/livez", "port": "http"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/-/metrics"
    assert annotations["prometheus.io/port"] == str(http["containerPort"])

    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert set(mounts) <= volumes
    assert environment(objects, proxy)["INFERWATCH_AGENT__SPOOL_DIR"] == mounts["spool"]


def test_service_reaches_the_proxy_never_the_model_server(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    service = objects[("Service", "model-server")]
    deployment = objects[("Deployment", "model-server")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert "ports" not in container(deployment, "model-server")


def test_detector_statefulset(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    detectors = objects[("StatefulSet", "inferwatch-detector")]
    detector = container(detectors, "detector")
    assert build_parser().parse_args(detector["args"]).command == "detect"
    # each replica is a static member of the group under its pod's stable name
    named = {item["name"]: item for item in detector["env"]}
    assert named["INFERWATCH_DETECT__INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert detectors["spec"]["podManagementPolicy"] == "Parallel"
    proxy = container(objects[("Deployment", "model-server")], "inferwatch-proxy")
    assert detector["image"] == proxy["image"]
    # its liveness probe and scrape annotations point at the port its settings serve on
    settings_port = int(named["INFERWATCH_DETECT__METRICS_PORT"]["value"])
    ports = {p["name"]: p["containerPort"] for p in detector["ports"]}
    assert ports[detector["livenessProbe"]["httpGet"]["port"]] == settings_port
    assert detector["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = detectors["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings_port
    assert named["INFERWATCH_DETECT__METRICS_HOST"]["value"] == "0.0.0.0"


@pytest.mark.parametrize(("kind", "name", "container_name"),
                         [("StatefulSet", "inferwatch-detector", "detector"),
                          ("Deployment", "model-server", "inferwatch-proxy")])
def test_inferwatch_containers_meet_the_restricted_pod_security_standard(
        objects: dict[tuple[str, str], dict[str, Any]], kind: str, name: str, container_name: str) -> None:
    security = container(objects[(kind, name)], container_name)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(("kind", "deployment", "name"),
                         [("Deployment", "model-server", "inferwatch-proxy"),
                          ("StatefulSet", "inferwatch-detector", "detector")])
def test_environment_is_valid_settings(
    objects: dict[tuple[str, str], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    deployment: str,
    name: str,
) -> None:
    env = environment(objects, container(objects[(kind, deployment)], name))
    for key, value in env.items():
        assert key.startswith("INFERWATCH_")
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.bus.kind == "kafka"
    assert settings.store.kind == "elasticsearch"
    assert settings.agent.hmac_key.get_secret_value() != "inferwatch-default-pseudonym-key"


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/inferwatch")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.action) == ("agent", "proxy")
    assert args.upstream.startswith("http://127.0.0.1:")
    assert service["KillMode"] == "mixed"  # SIGTERM to the proxy; it stops its event worker itself
    assert service["Restart"] == "always"
    assert unit["Install"]["WantedBy"] == "multi-user.target"

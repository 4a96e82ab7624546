"""deploy/docker-compose.yml: well-formed, complete, and its inferwatch settings valid."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from inferwatch.collectors.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_official_images(compose):
    services = compose["services"]
    assert set(services) == {"kafka", "elasticsearch", "detector", "model-server"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["elasticsearch"]["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:8.")
    for name in ("detector", "model-server"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY.parent / services[name]["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("service", ["detector", "model-server"])
def test_inferwatch_environment_is_valid_settings(compose, monkeypatch, service):
    env = compose["services"][service]["environment"]
    for key, value in env.items():
        assert key.startswith("INFERWATCH_")
        monkeypatch.setenv(key, str(value).replace("${INFERWATCH_HMAC_KEY:-", "").rstrip("}"))
    settings = load_settings()
    assert settings.bus.kind == "kafka"
    assert settings.bus.bootstrap_servers == ["kafka:9092"]
    assert settings.store.kind == "elasticsearch"


def test_the_detectors_health_check_asks_the_port_it_serves_on(compose):
    detector = compose["services"]["detector"]
    port = detector["environment"]["INFERWATCH_DETECT__METRICS_PORT"]
    [check] = [part for part in detector["healthcheck"]["test"] if "urlopen" in part]
    assert f"http://127.0.0.1:{port}/healthz" in check
    compile(check, "healthcheck", "exec")  # python -c runs it


def test_model_server_app_is_importable(compose, tmp_path, monkeypatch):
    entry = compose["services"]["model-server"]["entrypoint"]
    assert entry[:2] == ["uvicorn", "inferwatch.demo.app:app"]
    monkeypatch.chdir(tmp_path)  # the agent's default embedded bus lands here
    import importlib

    from inferwatch.agent import InferwatchMiddleware, get_agent

    module = importlib.import_module("inferwatch.demo.app")
    assert isinstance(module.app, InferwatchMiddleware)
    get_agent().shutdown()


def test_docker_compose_config_accepts_it_where_docker_compose_exists():
    docker = shutil.which("docker")
    has_compose = docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                            check=False).returncode == 0
    if has_compose:
        run = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
    else:  # no compose plugin here: the structural checks above are what we can do
        assert yaml.safe_load(COMPOSE.read_text())["services"]


def test_the_model_server_keeps_calls_made_before_the_topics_exist(compose):
    # The detector creates the topics when it starts: until then the agent spools, it does not drop.
    server = compose["services"]["model-server"]
    assert server["environment"]["INFERWATCH_AGENT__SPOOL_DIR"]
    assert "detector" in server["depends_on"]

"""Static checks of the multi-machine infrastructure in infra/: it parses, every reference
points at something that exists, every NIGHTSHIFT_* variable is a real setting, and every
service URL uses a port that service actually serves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tasks.core.settings import Settings

INFRA = Path(__file__).resolve().parents[3] / "infra"
URL = re.compile(r"(?:[a-z0-9+]+)://(?:[^@/\s]+@)?([a-z][a-z0-9-]*):(\d+)")
SETTINGS = {f"NIGHTSHIFT_{name.upper()}" for name in Settings.model_fields}


def _urls(values) -> list[tuple[str, int]]:
    text = " ".join(str(v) for v in values)
    return [(host, int(port)) for host, port in URL.findall(text)]


def _command_text(command) -> str:
    return " ".join(command) if isinstance(command, list) else str(command or "")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / "k8s" / "nightshift.yaml").read_text()) if d]


def _compose_ports(service: dict) -> set[int]:
    ports = {int(str(p).split(":")[-1]) for p in service.get("ports", [])}
    return ports | {int(p) for p in service.get("expose", [])}


def test_compose_has_the_production_topology(compose):
    services = compose["services"]
    for name in (
        "prefect-server",
        "prefect-db",
        "prefect-worker",
        "mlflow",
        "mlflow-db",
        "minio",
        "dask-scheduler",
        "dask-cuda-worker",
        "spark-master",
        "spark-worker",
    ):
        assert name in services, f"compose.yaml lacks service {name}"
    gpu = services["dask-cuda-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "dask cuda worker" in services["dask-cuda-worker"]["command"]


def test_compose_references_resolve(compose):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for target in depends if isinstance(depends, list) else depends.keys():
            assert target in services, f"{name} depends on unknown service {target}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        env = service.get("environment", {})
        for key in env:
            if key.startswith("NIGHTSHIFT_"):
                assert key in SETTINGS, f"{name}: {key} is not a nightshift setting"
        for host, port in _urls(list(env.values()) + [_command_text(service.get("command"))]):
            if host in services:
                assert port in _compose_ports(services[host]), (
                    f"{name} talks to {host}:{port}, which {host} does not serve"
                )


def test_compose_nightshift_processes_share_one_settings_block(compose):
    services = compose["services"]
    anchored = [
        n for n in ("prefect-worker", "dask-scheduler", "dask-cuda-worker") if n in services
    ]
    envs = [services[n]["environment"] for n in anchored]
    assert all(env == envs[0] for env in envs)
    assert envs[0]["NIGHTSHIFT_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    assert envs[0]["NIGHTSHIFT_PREFECT_API_URL"] == envs[0]["PREFECT_API_URL"]


def test_k8s_references_resolve(k8s):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s}
    services = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Service"}
    deployments = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Deployment"}
    config = next(d for d in k8s if d["kind"] == "ConfigMap")
    secret = next(d for d in k8s if d["kind"] == "Secret")
    assert {d["metadata"].get("namespace") for d in k8s if d["kind"] != "Namespace"} == {
        "nightshift"
    }

    for key in config["data"]:
        if key.startswith("NIGHTSHIFT_"):
            assert key in SETTINGS, f"ConfigMap: {key} is not a nightshift setting"

    container_ports: dict[str, set[int]] = {}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= pod["metadata"]["labels"].items()
        ), f"Deployment {name}: selector does not match its pods"
        ports = set()
        texts = []
        for container in pod["spec"]["containers"]:
            ports |= {p["containerPort"] for p in container.get("ports", [])}
            texts.append(_command_text(container.get("command")))
            texts.append(_command_text(container.get("args")))
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                assert (kind, ref["name"]) in kinds, f"{name} reads missing {kind} {ref['name']}"
            for env in container.get("env", []):
                texts.append(str(env.get("value", "")))
                secret_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if secret_ref:
                    assert secret_ref["key"] in secret["stringData"], (
                        f"{name}: secret key {secret_ref['key']} does not exist"
                    )
        container_ports[name] = ports
        for host, port in _urls(texts + list(config["data"].values())):
            assert host in services, f"{name} talks to {host}, which has no Service"
            assert port in {p["port"] for p in services[host]["spec"]["ports"]}, (
                f"{name} talks to {host}:{port}; Service {host} does not expose {port}"
            )

    for name, service in services.items():
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {name} selects no Deployment"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports[selected[0]["metadata"]["name"]], (
                f"Service {name} targets port {port['targetPort']} no container listens on"
            )


def test_k8s_gives_each_dask_cuda_worker_pod_one_gpu(k8s):
    worker = next(d for d in k8s if d["metadata"]["name"] == "dask-cuda-worker")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"][:3] == ["dask", "cuda", "worker"]


def test_the_settings_profile_example_names_only_real_settings():
    for line in (INFRA / "nightshift.env.example").read_text().splitlines():
        if line.startswith("NIGHTSHIFT_"):
            assert line.split("=")[0] in SETTINGS, line


def test_the_stack_script_binds_loopback_only():
    script = (INFRA / "stack.sh").read_text()
    assert "HOST=127.0.0.1" in script
    assert "0.0.0.0" not in script


def test_the_model_service_is_internal_probed_and_secret_free(compose, k8s):
    service = compose["services"]["model-service"]
    assert "nightshift serve-model" in service["command"]
    assert all(str(p).startswith("127.0.0.1:") for p in service["ports"]), service["ports"]
    assert "/ready" in " ".join(service["healthcheck"]["test"])
    env = " ".join(f"{k}={v}" for k, v in service["environment"].items())
    assert "SECRET" not in env and "PASSWORD" not in env

    deployment = next(
        d for d in k8s if d["kind"] == "Deployment" and d["metadata"]["name"] == "model-service"
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["nightshift", "serve-model"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert all("secretRef" not in source for source in container["envFrom"])
    k8s_service = next(
        d for d in k8s if d["kind"] == "Service" and d["metadata"]["name"] == "model-service"
    )
    assert k8s_service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_the_stack_script_starts_the_model_service_on_loopback():
    script = (INFRA / "stack.sh").read_text()
    assert 'serve-model --host "$HOST"' in script
    assert "model-service" in script.split("SERVICES=(")[1].split(")")[0]

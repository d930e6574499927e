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


SECRET_NAME = "nightshift-secrets"


def _documented_secret_keys() -> set[str]:
    """The keys the k8s header's `kubectl create secret` command tells operators to set."""
    text = (INFRA / "k8s" / "nightshift.yaml").read_text()
    return set(re.findall(r"--from-literal=([A-Z_]+)=", text))


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
                if "secretRef" in source:  # created outside the file, see its header
                    assert source["secretRef"]["name"] == SECRET_NAME, source
                    continue
                ref = source["configMapRef"]
                assert ("ConfigMap", ref["name"]) in kinds, f"{name} reads missing {ref['name']}"
            for env in container.get("env", []):
                texts.append(str(env.get("value", "")))
                secret_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if secret_ref:
                    assert secret_ref["name"] == SECRET_NAME, secret_ref
                    assert secret_ref["key"] in _documented_secret_keys(), (
                        f"{name}: secret key {secret_ref['key']} is not in the header's "
                        "`kubectl create secret` command"
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


# ----------------------------------------------------------------------- safe defaults

# A secret's value written into a file of the repository: a default password, a key, a
# placeholder someone might deploy. Secrets come from the environment (or Prefect blocks).
DEFAULT_SECRET = re.compile(
    r"(?i:change-?me|minioadmin|hunter2)"  # placeholders people deploy
    r"|\b[A-Z_]*(?:PASSWORD|SECRET_ACCESS_KEY|SECRET_KEY|TOKEN)\s*[:=]\s*['\"]?[A-Za-z0-9]"
    r"|\$\{[A-Z_]*(?:PASSWORD|SECRET|KEY)[A-Z_]*:-"  # compose: a default for a secret
    r"|(?i:\bpassword\w*)\s*=\s*['\"][^'\"{$]+['\"]"  # code: a password literal
)
SCANNED = ("infra", "tasks", "flows", "data_contracts", "Makefile", "pyproject.toml")


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host = str(port).rsplit(":", 2)[0] if str(port).count(":") >= 2 else None
            assert host in ("${NIGHTSHIFT_BIND:-127.0.0.1}", "127.0.0.1"), (
                f"{name} publishes {port} on every interface; use "
                "${NIGHTSHIFT_BIND:-127.0.0.1}:port:port"
            )


def test_compose_refuses_to_start_without_real_secrets(compose):
    text = (INFRA / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?set \1 ", text))
    assert required >= {"MINIO_ROOT_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD"}
    # $${...} is the container shell's own variable, not compose interpolation
    for reference in re.findall(r"(?<!\$)\$\{([A-Z_]*(?:PASSWORD|SECRET)[A-Z_]*)([^}]*)\}", text):
        name, rest = reference
        assert rest.startswith(":?"), f"compose.yaml: ${{{name}{rest}}} must be required (:?)"


def test_k8s_references_its_secret_and_inlines_none(k8s):
    assert not [d for d in k8s if d["kind"] == "Secret"], "secret values inlined in the manifest"
    assert _documented_secret_keys() == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "PREFECT_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
    }
    for service in (d for d in k8s if d["kind"] == "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    for deployment in (d for d in k8s if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert not pod.get("hostNetwork"), deployment["metadata"]["name"]
        for container in pod["containers"]:
            assert all("hostPort" not in p for p in container.get("ports", [])), container


def test_no_file_of_the_tree_carries_a_default_secret():
    root = INFRA.parent
    files = [
        p
        for entry in SCANNED
        for p in ([root / entry] if (root / entry).is_file() else (root / entry).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert len(files) > 50
    found = [
        f"{p.relative_to(root)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text(errors="ignore").splitlines(), 1)
        if DEFAULT_SECRET.search(line)
    ]
    assert not found, "default secrets in the tree:\n" + "\n".join(found)


def test_the_default_secret_scan_can_fail():
    for bad in (
        "POSTGRES_PASSWORD: hunter2",
        "AWS_SECRET_ACCESS_KEY=abc123",
        "${MINIO_ROOT_PASSWORD:-nightshift}",
        "password: change-me",
        'client = connect(password="s3cret")',
    ):
        assert DEFAULT_SECRET.search(bad), bad
    for fine in (
        "POSTGRES_PASSWORD: ${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD in infra/.env}",
        "--from-literal=AWS_SECRET_ACCESS_KEY=...",
        "valueFrom: {secretKeyRef: {name: nightshift-secrets, key: MLFLOW_DB_PASSWORD}}",
    ):
        assert not DEFAULT_SECRET.search(fine), fine


def test_local_dask_dashboards_default_to_loopback():
    from tasks.ops.cluster import local_cluster_kwargs

    kwargs = local_cluster_kwargs(Settings(_env_file=None, dask_address=None, dask_workers=1))
    assert kwargs["dashboard_address"] == "127.0.0.1:0" and kwargs["host"] == "127.0.0.1"

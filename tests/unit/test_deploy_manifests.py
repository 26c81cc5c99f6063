"""The Kubernetes manifests in `deploy/k8s/` parse, and agree with the code they deploy."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from app.keys import DISPATCH_ACTORS, NOTIFICATION_ACTORS, QUEUE_DISPATCH, QUEUE_NOTIFICATIONS, QUEUES
from app.settings import load_settings
from workers.batches import actors_sql

yaml = pytest.importorskip("yaml")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


def documents() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def environment() -> dict[str, str]:
    config = by_kind("ConfigMap")["dispatch-farm-config"]["data"]
    secret = by_kind("Secret")["dispatch-farm-secrets"]["stringData"]
    return {**config, **secret}


def test_every_manifest_parses_into_named_objects() -> None:
    docs = documents()
    assert {doc["kind"] for doc in docs} >= {"ConfigMap", "Secret", "Deployment", "Service", "Job",
                                             "ScaledObject", "TriggerAuthentication"}
    assert all(doc.get("apiVersion") and doc["metadata"].get("name") for doc in docs)


#: What an operator puts in the Secret in place of the manifests' placeholder.
OPERATOR_SECRET = "Zk3q9-Lr2vX8pW4tY7uB1nC6mD0sF5gH"


def test_the_manifests_placeholder_secret_is_refused_until_replaced() -> None:
    from app.settings import SettingsError

    with pytest.raises(SettingsError, match="JWT_SECRET is a placeholder"):
        load_settings(environ=environment(), env_file=Path("/nonexistent"))


def test_the_configuration_is_one_the_farm_accepts_in_production() -> None:
    settings = load_settings(environ={**environment(), "JWT_SECRET": OPERATOR_SECRET},
                             env_file=Path("/nonexistent"))
    assert settings.env == "production"
    assert settings.worker.processes == 1
    assert settings.worker.metrics_port == 9191
    grace = {name: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
             for name, d in by_kind("Deployment").items() if name.startswith("worker")}
    assert all(seconds > settings.worker.shutdown_timeout_ms / 1000 for seconds in grace.values())


def test_web_is_probed_and_served_and_the_clock_runs_alone() -> None:
    deployments = by_kind("Deployment")
    web = container(deployments["web"])
    assert web["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert web["livenessProbe"]["httpGet"]["path"] == "/health"
    assert deployments["web"]["spec"]["replicas"] >= 2
    web_pods = deployments["web"]["spec"]["selector"]["matchLabels"]
    assert by_kind("Service")["web"]["spec"]["selector"] == web_pods
    clock = deployments["clock"]
    assert clock["spec"]["replicas"] == 1 and clock["spec"]["strategy"]["type"] == "Recreate"
    procfile = dict(line.split(": ", 1) for line in PROCFILE.read_text().splitlines() if ": " in line)
    assert container(clock)["command"] == shlex.split(procfile["clock"])
    job = by_kind("Job")["dispatch-farm-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == shlex.split(procfile["release"])


def test_each_worker_deployment_scales_on_the_in_flight_keys_of_the_queues_it_consumes() -> None:
    namespace = environment()["DRAMATIQ_NAMESPACE"]
    deployments = by_kind("Deployment")
    scaled = by_kind("ScaledObject")
    consumed: list[str] = []
    for name, deployment in deployments.items():
        if not name.startswith("worker"):
            continue
        command = container(deployment)["command"]
        assert command[:3] == ["python", "-m", "workers.run"] and command[3] == "--queues"
        queues = command[4:]
        consumed.extend(queues)
        targets = [s for s in scaled.values() if s["spec"]["scaleTargetRef"]["name"] == name]
        assert len(targets) == 1, f"{name} needs exactly one ScaledObject"
        spec = targets[0]["spec"]
        assert spec["minReplicaCount"] >= 1  # workers relay the outbox and hold delayed messages
        redis_triggers = [t for t in spec["triggers"] if t["type"] == "redis"]
        keys = [t["metadata"]["listName"] for t in redis_triggers]
        assert keys == [f"{namespace}:{queue}.msgs" for queue in queues]
        # the jobs the batch threads take from the ledger are counted there, per queue served
        ledger = [t for t in spec["triggers"] if t["type"] == "postgresql"]
        assert {t["type"] for t in spec["triggers"]} <= {"redis", "postgresql"}
        batched = {QUEUE_DISPATCH: DISPATCH_ACTORS, QUEUE_NOTIFICATIONS: NOTIFICATION_ACTORS}
        wanted = [actors for queue, actors in batched.items() if queue in queues]
        assert len(ledger) == len(wanted)
        for trigger, actors in zip(ledger, wanted, strict=True):
            assert trigger["authenticationRef"]["name"] == "dispatch-farm-postgres"
            assert actors_sql(actors) in " ".join(trigger["metadata"]["query"].split())
        assert not any(re.search(r"\.(DQ|XQ)", key) for key in keys)
    assert sorted(consumed) == sorted(QUEUES), "every queue is consumed by exactly one deployment"


#: PostgreSQL's default max_connections (100) less its 3 superuser slots and 7 left for operators,
#: `farmctl` and monitoring: what the manifests may use with every deployment at its maximum.
CONNECTION_BUDGET = 90


def max_replicas() -> dict[str, int]:
    """Each Deployment's most pods: KEDA's maximum where it scales one, else its replicas."""
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in by_kind("ScaledObject").values()}
    found = {}
    for name, deployment in by_kind("Deployment").items():
        spec = scaled.get(name)
        found[name] = spec["maxReplicaCount"] if spec else deployment["spec"]["replicas"]
        if spec:
            assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"], name
    return found


def test_the_manifests_fit_the_stated_postgresql_connection_budget() -> None:
    from app.connection_budget import MIGRATION_CONNECTIONS, budget_of

    process_of = {"web": "web", "worker-dispatch": "worker", "worker-background": "worker", "clock": "clock"}
    replicas = max_replicas()
    assert set(replicas) == set(process_of)
    deployments = by_kind("Deployment")
    used = {}
    for name in replicas:
        command = container(deployments[name])["command"]
        queues = command[4:] if name.startswith("worker") else None
        own = {e["name"]: e["value"] for e in container(deployments[name]).get("env", [])}
        pod_settings = load_settings(environ={**environment(), **own, "JWT_SECRET": OPERATOR_SECRET},
                                     env_file=Path("/nonexistent"))
        used[name] = replicas[name] * budget_of(process_of[name], pod_settings, queues).total

    total = sum(used.values()) + MIGRATION_CONNECTIONS
    assert total <= CONNECTION_BUDGET, f"{total} connections at full scale: {used}"
    # And the figure the config's comment states is the one computed
    assert f"at most {total} PostgreSQL connections" in (K8S / "config.yaml").read_text()


def test_the_web_never_lets_uvicorn_rewrite_the_client_address() -> None:
    """uvicorn would take X-Forwarded-For from any peer it trusts; the app's TRUSTED_PROXIES decides."""
    procfile = dict(line.split(": ", 1) for line in PROCFILE.read_text().splitlines() if ": " in line)
    web = container(by_kind("Deployment")["web"])["command"]
    assert "--no-proxy-headers" in web and "--forwarded-allow-ips" not in web
    assert "--no-proxy-headers" in shlex.split(procfile["web"])
    dockerfile = (K8S.parents[1] / "Dockerfile").read_text()
    assert "--no-proxy-headers" in dockerfile and "APP_ENV=production" in dockerfile
    settings = load_settings(environ={**environment(), "JWT_SECRET": OPERATOR_SECRET},
                             env_file=Path("/nonexistent"))
    assert [str(n) for n in settings.auth.trusted_proxies] == ["10.0.0.0/8"]

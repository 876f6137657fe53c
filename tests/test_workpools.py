"""Docker and Kubernetes work pools (ops/workpools.py, flows/deploy.py --kind, Dockerfile), without a cluster or a
Docker engine: the deployments are built by the same code as the process pool's, the Kubernetes Job manifest a
worker would submit is rendered by prefect-kubernetes' own configuration class and checked (image, command,
resources, env, volumes), the Docker pool's template asks for the GPUs and the cache volume, and the Dockerfile is
read for what the deployments rely on (working directory, pinned stack, the command)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from flows.deploy import build_deployments
from ops.prefect_local import job_env
from ops.workpools import DVC_CACHE_MOUNT, GPU_RESOURCE, IMAGE_WORKDIR, docker_job_template, render_kubernetes_job

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/searchr3:0.1.0"


def _container(manifest: dict) -> dict:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_image_deployments_come_from_the_same_deploy_code(kind):
    manual, nightly = build_deployments(ROOT, pool=f"pool-{kind}", manual_parameters={"profile": "paper"}, kind=kind,
                                        image=IMAGE, gpus=4, s3_endpoint="https://minio.example.com")
    assert (manual.name, nightly.name) == ("manual", "nightly")
    assert manual.entrypoint == "flows/pipeline.py:training_pipeline"
    assert nightly.entrypoint == "flows/nightly.py:nightly_retrain"
    for d in (manual, nightly):
        assert d.work_pool_name == f"pool-{kind}" and d.storage is None  # the code is the image's, not a checkout
        assert d.job_variables["image"] == IMAGE
        assert d.job_variables["env"] == job_env() | {"AWS_ENDPOINT_URL": "https://minio.example.com"}
        assert d.job_variables.get("gpu_count") == (4 if kind == "kubernetes" else None)
    assert manual.parameters == {"profile": "paper"} and nightly.schedules


def test_an_image_pool_without_an_image_is_refused():
    with pytest.raises(ValueError, match="image"):
        build_deployments(ROOT, kind="kubernetes")
    with pytest.raises(ValueError, match="kind"):
        build_deployments(ROOT, kind="ray")


def test_kubernetes_job_manifest_runs_the_image_on_gpus_with_the_cache_and_the_remote():
    manual, _ = build_deployments(ROOT, pool="k8s", kind="kubernetes", image=IMAGE, gpus=8,
                                  s3_endpoint="https://minio.example.com", region="eu-west-1")
    manifest = render_kubernetes_job(manual.job_variables, flow_run_id="11111111-2222-3333-4444-555555555555")
    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    pod = manifest["spec"]["template"]["spec"]
    c = _container(manifest)
    assert c["image"] == IMAGE
    assert c["args"] == ["prefect", "flow-run", "execute"] and c["workingDir"] == IMAGE_WORKDIR
    assert c["resources"]["limits"][GPU_RESOURCE] == 8 and c["resources"]["requests"][GPU_RESOURCE] == 8
    assert c["resources"]["requests"]["memory"] == "64Gi"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PREFECT__FLOW_RUN_ID"] == "11111111-2222-3333-4444-555555555555"
    assert env["AWS_ENDPOINT_URL"] == "https://minio.example.com" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert all(env[k] == v for k, v in job_env().items())  # offline, logging: as on the process pool
    assert not any("SECRET" in k for k in env), "credentials come from the secret, never inline"
    assert c["envFrom"] == [{"secretRef": {"name": "searchr3-dvc-remote", "optional": True}}]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["dvc-cache"] == DVC_CACHE_MOUNT
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dvc-cache"]["persistentVolumeClaim"]["claimName"] == "searchr3-dvc-cache"
    assert pod["restartPolicy"] == "Never" and pod["tolerations"][0]["key"] == GPU_RESOURCE
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_kubernetes_pool_default_is_one_gpu():
    manual, _ = build_deployments(ROOT, pool="k8s", kind="kubernetes", image=IMAGE)
    c = _container(render_kubernetes_job(manual.job_variables))
    assert c["resources"]["limits"][GPU_RESOURCE] == 1


def test_docker_pool_template_asks_for_the_gpus_and_the_cache_volume():
    props = docker_job_template()["variables"]["properties"]
    assert props["volumes"]["default"] == [f"searchr3-dvc-cache:{DVC_CACHE_MOUNT}"]
    kwargs = props["container_create_kwargs"]["default"]
    assert kwargs["device_requests"] == [{"count": -1, "capabilities": [["gpu"]]}]
    assert kwargs["working_dir"] == IMAGE_WORKDIR


def test_dockerfile_builds_the_pinned_stack_where_the_deployments_expect_it():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+$", text, re.M), "a pinned base image of the project's Python"
    assert f"WORKDIR {IMAGE_WORKDIR}" in text
    assert 'ARG TORCH_VERSION=2.13.0' in text and "torch==${TORCH_VERSION}" in text
    assert "-c constraints.txt" in text and '".[workers]"' in text
    assert 'CMD ["prefect", "flow-run", "execute"]' in text
    # the constraints pin every dependency of pyproject.toml at its pyproject version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    for dep in project["dependencies"] + project["optional-dependencies"]["workers"]:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)$", dep)
        if not m or m[1] == "torch":
            continue
        assert pins.get(m[1].lower().replace("_", "-")) == m[2], f"docker/constraints.txt disagrees on {dep}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "data/", ".dvc/cache/", "checkpoints/"} <= set(ignored)

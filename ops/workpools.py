"""Work pools beyond the local process pool: the base job templates of a Docker and a Kubernetes work pool.

Each template is the worker package's own default (``prefect_docker`` / ``prefect_kubernetes``, so every variable the
worker knows stays available) with what a searchr3 training run needs added:

- the image built from the repository's ``Dockerfile`` (the pinned stack; the code at :data:`IMAGE_WORKDIR`, which
  the deployments' entrypoints are relative to);
- GPUs: Kubernetes ``resources.limits["nvidia.com/gpu"] = {{ gpu_count }}`` (1 by default) with a node selector and a
  toleration for GPU nodes; Docker ``device_requests`` for ``{{ gpu_count }}`` GPUs (-1 = all);
- the DVC cache on a volume (a PersistentVolumeClaim / a named Docker volume) mounted at the repository's
  ``.dvc/cache``, so unchanged stages are restored from it rather than recomputed;
- the DVC remote's environment: plain variables (``AWS_ENDPOINT_URL`` for an S3-compatible store, region) in
  ``env``, and the credentials from a Kubernetes Secret (``envFrom``, ``{{ dvc_remote_secret }}``) or, for Docker,
  the worker's environment passed through by name.

``flows/deploy.py`` builds the deployments for these pools with the same code as the process pool's;
:func:`ensure_pool` creates a pool with its template (idempotent).
"""
from __future__ import annotations

import copy

IMAGE_WORKDIR = "/opt/searchr3"  # the Dockerfile's WORKDIR: the repository root inside the image
DVC_CACHE_MOUNT = f"{IMAGE_WORKDIR}/.dvc/cache"
GPU_RESOURCE = "nvidia.com/gpu"
KINDS = ("process", "docker", "kubernetes")


def _variable(template: dict, name: str, schema: dict) -> None:
    template["variables"]["properties"][name] = schema


def kubernetes_job_template() -> dict:
    """The Kubernetes work pool's base job template (``prefect_kubernetes``'s default + GPU, DVC cache, remote)."""
    from prefect_kubernetes.worker import KubernetesWorker

    t = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    _variable(t, "gpu_count", {"title": "GPUs", "type": "integer", "default": 1,
                               "description": f"{GPU_RESOURCE} requested by the flow run's pod (training runs on them)"})
    _variable(t, "gpu_node_selector", {"title": "GPU node selector", "type": "object",
                                       "default": {"nvidia.com/gpu.present": "true"}})
    _variable(t, "dvc_cache_claim", {"title": "DVC cache claim", "type": "string", "default": "searchr3-dvc-cache",
                                     "description": f"PersistentVolumeClaim mounted at {DVC_CACHE_MOUNT}"})
    _variable(t, "dvc_remote_secret", {"title": "DVC remote secret", "type": "string", "default": "searchr3-dvc-remote",
                                       "description": "Secret whose keys become the container's environment "
                                                      "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"})
    for name in ("cpu_request", "memory_request"):
        t["variables"]["properties"][name]["default"] = {"cpu_request": "8", "memory_request": "64Gi"}[name]
    pod = t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["resources"]["limits"][GPU_RESOURCE] = "{{ gpu_count }}"
    container["resources"]["requests"][GPU_RESOURCE] = "{{ gpu_count }}"
    container["volumeMounts"] = [{"name": "dvc-cache", "mountPath": DVC_CACHE_MOUNT},
                                 {"name": "dshm", "mountPath": "/dev/shm"}]  # NCCL / dataloaders need a large /dev/shm
    container["envFrom"] = [{"secretRef": {"name": "{{ dvc_remote_secret }}", "optional": True}}]
    container["workingDir"] = IMAGE_WORKDIR
    pod["volumes"] = [{"name": "dvc-cache", "persistentVolumeClaim": {"claimName": "{{ dvc_cache_claim }}"}},
                      {"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    pod["nodeSelector"] = "{{ gpu_node_selector }}"
    pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return t


def docker_job_template() -> dict:
    """The Docker work pool's base job template (``prefect_docker``'s default + GPUs, the DVC cache volume)."""
    from prefect_docker.worker import DockerWorker

    t = copy.deepcopy(DockerWorker.get_default_base_job_template())
    props = t["variables"]["properties"]
    props["volumes"]["default"] = [f"searchr3-dvc-cache:{DVC_CACHE_MOUNT}"]
    props["container_create_kwargs"]["default"] = {
        "device_requests": [{"count": -1, "capabilities": [["gpu"]]}],  # all GPUs of the host (`docker run --gpus all`)
        "shm_size": "16g", "working_dir": IMAGE_WORKDIR}
    return t


def job_template(kind: str) -> dict:
    if kind == "kubernetes":
        return kubernetes_job_template()
    if kind == "docker":
        return docker_job_template()
    if kind == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    raise ValueError(f"work pool kind must be one of {KINDS}, not {kind!r}")


def remote_env(endpoint_url: str = "", region: str = "") -> dict[str, str]:
    """The non-secret variables a DVC S3 remote needs in the job (credentials come from the secret)."""
    env = {}
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url  # an S3-compatible store (MinIO, Ceph, moto); botocore reads it
    if region:
        env["AWS_DEFAULT_REGION"] = region
    return env


def ensure_pool(name: str, kind: str, api_url: str | None = None, concurrency_limit: int = 1) -> None:
    """Create work pool ``name`` of ``kind`` with :func:`job_template` if missing (an existing pool is left as it is:
    an operator may have edited its template)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from ops.prefect_runs import api_client

    with api_client(api_url) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=kind, concurrency_limit=concurrency_limit,
                                                   base_job_template=job_template(kind),
                                                   description=f"searchr3 training on {kind}"))


class _NoApi:
    """A stand-in client for rendering offline: our templates reference no blocks or variables, so the worker's
    resolution steps never call it (any call would fail loudly)."""

    def __getattr__(self, name):
        raise RuntimeError(f"rendering a job template asked the Prefect API for {name!r}: the template references "
                           "a block or variable, which needs a server")


_NO_API = _NoApi()


def render_kubernetes_job(job_variables: dict, flow_run_id: str = "00000000-0000-0000-0000-000000000001",
                          template: dict | None = None) -> dict:
    """The Job manifest the Kubernetes worker would submit for a flow run of a deployment with ``job_variables``:
    the worker's own configuration class fills the template and prepares it for the run (command, env list, names)."""
    import asyncio
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        template or kubernetes_job_template(), job_variables, client=_NO_API))
    run = FlowRun(id=uuid.UUID(flow_run_id), flow_id=uuid.uuid4(), name="searchr3-run")
    config.prepare_for_flow_run(run)
    return config.job_manifest

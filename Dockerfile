# The CPU image: the API and CPU workers (libvips comes inside the pyvips-binary wheel: no system image libraries).
#
#   docker build -t thumbify .
#   docker run -e THUMBIFY_REDIS_URL=redis://redis:6379/0 -e THUMBIFY_API_KEYS_FILE=/keys.json ... thumbify
#   docker run -e THUMBIFY_REDIS_URL=redis://redis:6379/0 ... thumbify thumbify worker
#
# The Helm chart (helm/thumbify) runs it with `thumbify api` and `thumbify worker`; GPU workers use Dockerfile.gpu.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# -- build: the project's wheel ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every install comes from a lock file with hashes (scripts/lock.sh refreshes them).
COPY requirements/build.txt /tmp/build.txt
RUN pip install --require-hashes -r /tmp/build.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY thumbify ./thumbify
COPY thumbify_cli ./thumbify_cli
COPY api ./api
COPY gpu_worker ./gpu_worker
COPY kernels ./kernels
RUN python -m build --wheel --no-isolation --outdir /wheels .

# -- run ----------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/thumbify \
    PATH=/opt/thumbify/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.* \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/runtime.txt /tmp/runtime.txt
COPY --from=build /wheels /wheels
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --require-hashes -r /tmp/runtime.txt \
 && pip install --no-deps "$(ls /wheels/thumbify-*.whl)" \
 && rm -rf /wheels /tmp/runtime.txt

ENV MALLOC_ARENA_MAX=2 \
    THUMBIFY_BACKEND=cpu \
    THUMBIFY_DATA_DIR=/var/lib/thumbify \
    THUMBIFY_HOST=0.0.0.0

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/thumbify --create-home thumbify
USER 10001:10001
WORKDIR /var/lib/thumbify
EXPOSE 8000

# tini passes SIGTERM on (the API drains, a worker finishes or hands back its jobs) and reaps what is left.
ENTRYPOINT ["tini", "--"]
CMD ["thumbify", "api"]

# Serving image for the deployed model: the champion's exported bento (models/serving/champion.bento,
# written by the deploy stage and kept current by canary promotion and rollback) on top of the
# serving lock only (constraints-serve.txt: every package pinned, each file checked by sha256).
#
#   make pipeline
#   docker build -t adult-income-service .
#   docker run -p 3000:3000 adult-income-service
#
# Verified for real by scripts/verify_container.sh (podman, see its header).
#
# Build arguments
#   BASE_IMAGE      any Debian-like image with python3.11 and the venv module (default
#                   python:3.11-slim; the verify script uses a local debootstrap bookworm image).
#   BENTO_ARCHIVE   the exported bento inside the build context (default: the champion's).
#   BENTO_TAG       the bento to serve once imported; default: the one bento the archive holds
#                   (deployments/champion.json names the same tag).
#   PIP_CA_BUNDLE   path, inside the build, of a CA bundle pip must trust (TLS-inspecting
#                   corporate proxies). Unset: pip uses its own certifi bundle. The file has to be
#                   visible to RUN steps, e.g. with podman/buildah
#                     podman build -v /etc/ssl/certs:/etc/ssl/certs:ro \
#                       --build-arg PIP_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt .
#                   The bundle is only read during the build; it is not copied into the image.
#   PIP_EXTRA_ARGS  extra pip arguments (e.g. "--index-url https://mirror.example/simple"). A mirror
#                   must serve PyPI's own files: pip refuses any file whose sha256 is not in the lock.
#
# The image keeps the HEALTHCHECK only in Docker image format: with podman/buildah build with
# `--format docker` (OCI images have no HEALTHCHECK field).

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG BENTO_ARCHIVE=models/serving/champion.bento
ARG BENTO_TAG=
ARG PIP_CA_BUNDLE=
ARG PIP_EXTRA_ARGS=
ARG APP_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    BENTOML_HOME=/home/app/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    BENTO_TAG=${BENTO_TAG} \
    PORT=3000

# A fixed, non-root uid/gid: volume permissions and Kubernetes runAsUser can rely on it.
RUN groupadd --system --gid ${APP_UID} app \
 && useradd --system --uid ${APP_UID} --gid ${APP_UID} --home-dir /home/app --create-home \
      --shell /usr/sbin/nologin app

# The serving lock only, in a venv: works on python:3.11-slim and on Debian's python3 alike
# (Debian's system pip refuses to install outside a venv, PEP 668). constraints-serve.txt is
# requirements-serve.txt with every transitive package, at the versions the pipeline was tested
# with, each with the sha256 of PyPI's files (`make lock` writes it): --require-hashes refuses any
# other file, --no-deps installs nothing the lock does not name, and `pip check` proves it complete.
# Bytecode compiled by pip is kept: without it the service needs far longer to start.
COPY constraints-serve.txt /opt/
RUN set -eu; \
    cert=""; \
    if [ -n "${PIP_CA_BUNDLE}" ]; then \
      if [ ! -r "${PIP_CA_BUNDLE}" ]; then \
        echo "PIP_CA_BUNDLE=${PIP_CA_BUNDLE} is not readable in the build: mount it (see Dockerfile header)" >&2; \
        exit 1; \
      fi; \
      cert="--cert ${PIP_CA_BUNDLE}"; \
    fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --progress-bar off --require-hashes --no-deps \
      $cert ${PIP_EXTRA_ARGS} -r /opt/constraints-serve.txt; \
    /opt/venv/bin/pip check

# LightGBM models (train.estimator: lightgbm) need libgomp, the GNU OpenMP runtime, which slim
# images may lack; installed from the base's own Debian archive only when missing, then proven.
RUN set -eu; \
    if ! ldconfig -p | grep -q 'libgomp\.so\.1'; then \
      apt-get update -qq && apt-get install -y -qq --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi; \
    /opt/venv/bin/python -c "import lightgbm"

# Import the bento (service code and model) into the app user's own store.
COPY ${BENTO_ARCHIVE} /opt/bento/service.bento
USER ${APP_UID}:${APP_UID}
WORKDIR /home/app
RUN bentoml import /opt/bento/service.bento \
 && bentoml list -o json | python -c "import json, sys; print(json.load(sys.stdin)[0]['tag'])" \
      > /home/app/bento.tag \
 && echo "imported bento $(cat /home/app/bento.tag)"

EXPOSE 3000
# slim images have no curl: python's urllib answers the health check (non-2xx raises -> exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '3000'), timeout=4)"]

# exec: bentoml becomes PID 1 and receives SIGTERM from `docker stop` directly.
CMD ["sh", "-c", "exec bentoml serve \"${BENTO_TAG:-$(cat /home/app/bento.tag)}\" --host 0.0.0.0 --port \"$PORT\""]

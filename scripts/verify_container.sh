#!/usr/bin/env bash
# Build the serving image from ./Dockerfile with podman, run it, and check it for real:
# /readyz answers 200, one real prediction comes back, the HEALTHCHECK passes, the process is not
# root, no training-only package is installed. Writes image size, build time and time to ready to
# benchmarks/results/container.json, then removes the container and the image.
#
# Needs: podman and runc (Debian: apt-get install podman runc), python3, and either a reachable
# registry (BASE_IMAGE=docker.io/library/python:3.11-slim) or debootstrap, which makes a local
# Debian bookworm base (python 3.11) once and caches it under $CACHE_DIR (about a minute).
# Run as root (rootful podman). Must run after `make pipeline` (needs the exported bento).
#
# Environment (all optional):
#   CONTEXT           build context laid out like the repository (Dockerfile, .dockerignore,
#                     constraints-serve.txt, deployments/champion.json, the archive it names); default:
#                     the repository itself. tests/container uses a scratch one in a fresh clone.
#   BASE_IMAGE        base to build FROM; default: the local debootstrap image (made if missing)
#   CACHE_DIR         cache for the debootstrap base (default /var/tmp/mlops-template-container)
#   IMAGE             tag of the image built here (default localhost/adult-income-service:verify)
#   CA_BUNDLE         CA bundle pip must trust inside the build (default: $PIP_CERT, else pip's
#                     global.cert, else none); mounted read-only into the build
#   PODMAN_RUNTIME    OCI runtime (default runc: crun fails on this kind of host's cgroups)
#   BUILD_CACHE=1     reuse podman's layer cache (default: a clean --no-cache build)
#   KEEP_IMAGE=1      keep the built image afterwards
#   READY_TIMEOUT     seconds to wait for /readyz (default 120)
#   RESULTS           output JSON (default benchmarks/results/container.json)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONTEXT="$(cd "${CONTEXT:-$REPO}" && pwd)"
CACHE_DIR="${CACHE_DIR:-/var/tmp/mlops-template-container}"
LOCAL_BASE="localhost/mlops-template-base:bookworm-python3"
IMAGE="${IMAGE:-localhost/adult-income-service:verify}"
PODMAN_RUNTIME="${PODMAN_RUNTIME:-runc}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
RESULTS="${RESULTS:-$REPO/benchmarks/results/container.json}"
CONTAINER="adult-income-verify-$$"
FORBIDDEN='^(dvc|mlflow|mlflow-skinny|pandera|evidently|pytest)=='

step() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$2"; }

# A private containers.conf: no default ulimits (setrlimit fails in this kind of sandbox) and the
# runc runtime. Used only when the caller has not chosen a configuration.
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  mkdir -p "$CACHE_DIR"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "%s"\n' "$PODMAN_RUNTIME" \
    > "$CACHE_DIR/containers.conf"
  export CONTAINERS_CONF="$CACHE_DIR/containers.conf"
fi
pm() { podman --runtime "$PODMAN_RUNTIME" "$@"; }

cleanup() {
  local rc=$?
  if pm container exists "$CONTAINER" 2>/dev/null; then
    if [[ $rc -ne 0 ]]; then
      printf '\n--- last container log lines ---\n' >&2
      pm logs --tail 40 "$CONTAINER" >&2 2>&1 || true
    fi
    pm rm -f -t 5 "$CONTAINER" >/dev/null 2>&1 || true
  fi
  if [[ "${KEEP_IMAGE:-0}" != 1 ]] && pm image exists "$IMAGE" 2>/dev/null; then
    pm rmi -f "$IMAGE" >/dev/null 2>&1 || true
  fi
  [[ $rc -eq 0 ]] || printf 'verify_container.sh: FAILED (exit %s)\n' "$rc" >&2
}
trap cleanup EXIT

step "[1/9] prerequisites"
command -v podman >/dev/null || fail "podman not installed (Debian: apt-get install podman runc)"
command -v "$PODMAN_RUNTIME" >/dev/null || fail "$PODMAN_RUNTIME not installed (apt-get install $PODMAN_RUNTIME)"
command -v python3 >/dev/null || fail "python3 not found"
[[ $(id -u) -eq 0 ]] || fail "run as root (rootful podman)"
CHAMPION="$CONTEXT/deployments/champion.json"
[[ -f "$CHAMPION" ]] || fail "$CHAMPION missing: run \`make pipeline\` first"
read -r BENTO_TAG ARCHIVE MODEL_VERSION < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["champion"]
print(c["bento_tag"], c["archive"], c.get("model_version") or "")' "$CHAMPION")
[[ -f "$CONTEXT/$ARCHIVE" ]] || fail "$CONTEXT/$ARCHIVE missing: run \`make pipeline\` first"
info "podman $(podman --version | awk '{print $3}'), runtime $PODMAN_RUNTIME"
info "bento $BENTO_TAG from $ARCHIVE (model version $MODEL_VERSION)"

step "[2/9] base image"
BASE_SECONDS=0
if [[ -n "${BASE_IMAGE:-}" ]]; then
  info "using BASE_IMAGE=$BASE_IMAGE"
elif pm image exists "$LOCAL_BASE"; then
  BASE_IMAGE="$LOCAL_BASE"
  info "cached local base $BASE_IMAGE"
else
  BASE_IMAGE="$LOCAL_BASE"
  tarball="$CACHE_DIR/bookworm-python3.tar"
  started=$(now)
  if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null \
      || fail "no registry here and debootstrap missing (apt-get install debootstrap), or set BASE_IMAGE"
    rootfs="$CACHE_DIR/rootfs.tmp"
    rm -rf "$rootfs"
    info "debootstrap bookworm (minbase + python3, venv, pip, ca-certificates, libgomp1) into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
      bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
      > "$CACHE_DIR/debootstrap.log" 2>&1 \
      || fail "debootstrap failed, see $CACHE_DIR/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  info "podman import $tarball as $BASE_IMAGE"
  pm import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
  BASE_SECONDS=$(elapsed "$started" "$(now)")
  info "base image ready in ${BASE_SECONDS} s"
fi

step "[3/9] podman build ($IMAGE)"
CA_BUNDLE="${CA_BUNDLE:-${PIP_CERT:-}}"
if [[ -z "$CA_BUNDLE" ]] && command -v pip3 >/dev/null; then
  CA_BUNDLE="$(pip3 config get global.cert 2>/dev/null || true)"
fi
build_args=(--format docker --network=host -f "$CONTEXT/Dockerfile" -t "$IMAGE"
            --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "BENTO_ARCHIVE=$ARCHIVE"
            --build-arg "BENTO_TAG=$BENTO_TAG")
if [[ -n "$CA_BUNDLE" ]]; then
  [[ -r "$CA_BUNDLE" ]] || fail "CA bundle $CA_BUNDLE not readable"
  build_args+=(-v "$(readlink -f "$CA_BUNDLE"):/run/build-ca/ca.pem:ro"
               --build-arg "PIP_CA_BUNDLE=/run/build-ca/ca.pem")
  info "pip in the build trusts $CA_BUNDLE"
fi
[[ "${BUILD_CACHE:-0}" == 1 ]] || build_args+=(--no-cache)
started=$(now)
pm build "${build_args[@]}" "$CONTEXT" >&2 || fail "podman build failed"
BUILD_SECONDS=$(elapsed "$started" "$(now)")
SIZE_BYTES=$(pm image inspect --format '{{.Size}}' "$IMAGE")
SIZE_MB=$(python3 -c "import sys; print(round(int(sys.argv[1]) / 1e6, 1))" "$SIZE_BYTES")
info "built in ${BUILD_SECONDS} s, image size ${SIZE_MB} MB"

step "[4/9] run the container and wait for /readyz"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
started=$(now)
# --health-interval=disable: no systemd here to schedule the check; step 6 runs it by hand.
pm run -d --name "$CONTAINER" --network=host -e "PORT=$PORT" --health-interval=disable "$IMAGE" >/dev/null \
  || fail "podman run failed"
ready=0
deadline=$(( $(date +%s) + READY_TIMEOUT ))
while (( $(date +%s) < deadline )); do
  [[ "$(pm inspect --format '{{.State.Running}}' "$CONTAINER")" == true ]] || fail "container exited"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/readyz" || true)
  if [[ "$code" == 200 ]]; then ready=1; break; fi
  sleep 0.5
done
[[ $ready == 1 ]] || fail "/readyz not 200 after ${READY_TIMEOUT} s"
READY_SECONDS=$(elapsed "$started" "$(now)")
info "$URL/readyz 200 after ${READY_SECONDS} s"

step "[5/9] one real prediction"
body='{"records": [{"age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
  "education_num": 13, "marital_status": "Never-married", "occupation": "Adm-clerical",
  "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital_gain": 2174,
  "capital_loss": 0, "hours_per_week": 40, "native_country": "United-States"}]}'
response=$(curl -sS --max-time 30 -H 'content-type: application/json' -d "$body" \
  -w '\n%{http_code}' "$URL/predict") || fail "POST /predict failed"
code="${response##*$'\n'}"
response="${response%$'\n'*}"
[[ "$code" == 200 ]] || fail "POST /predict answered $code: $response"
PREDICTION=$(python3 - "$response" "$MODEL_VERSION" <<'EOF'
import json, sys
body, version = json.loads(sys.argv[1]), sys.argv[2]
predictions = body if isinstance(body, list) else body.get("predictions")
assert isinstance(predictions, list) and len(predictions) == 1, f"one prediction expected: {body}"
p = predictions[0]
assert 0.0 <= float(p["probability"]) <= 1.0, f"probability out of range: {p}"
assert p["label"] in (">50K", "<=50K"), f"unexpected label: {p}"
assert not version or str(p.get("model_version")) == version, f"model_version != {version}: {p}"
print(json.dumps(p))
EOF
) || fail "unexpected /predict response: $response"
info "prediction: $PREDICTION"

step "[6/9] HEALTHCHECK (podman healthcheck run)"
health=$(pm healthcheck run "$CONTAINER" 2>&1) || fail "healthcheck not healthy: $health"
info "healthy${health:+ ($health)}"

step "[7/9] non-root user"
uid=$(pm exec "$CONTAINER" id -u)
[[ "$uid" =~ ^[0-9]+$ && "$uid" -ne 0 ]] || fail "container runs as uid '$uid'"
info "uid $uid"

step "[8/9] no training-only packages"
packages=$(pm exec "$CONTAINER" pip list --format=freeze 2>/dev/null)
if found=$(grep -iE "$FORBIDDEN" <<<"$packages"); then
  fail "training-only packages in the image: $(tr '\n' ' ' <<<"$found")"
fi
info "$(wc -l <<<"$packages") packages, none of dvc/mlflow/pandera/evidently/pytest"

step "[9/9] results -> ${RESULTS#"$REPO"/}"
mkdir -p "$(dirname "$RESULTS")"
python3 - "$RESULTS" <<EOF
import json, sys
result = {
    "image": "$IMAGE",
    "base_image": "$BASE_IMAGE",
    "bento_tag": "$BENTO_TAG",
    "podman": "$(podman --version | awk '{print $3}')",
    "image_size_mb": $SIZE_MB,
    "base_image_seconds": $BASE_SECONDS,
    "build_seconds": $BUILD_SECONDS,
    "build_cache": "${BUILD_CACHE:-0}" == "1",
    "time_to_ready_seconds": $READY_SECONDS,
    "container_uid": $uid,
    "prediction": json.loads('''$PREDICTION'''),
    "measured_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
}
open(sys.argv[1], "w").write(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
EOF
printf '\nverify_container.sh: OK\n' >&2

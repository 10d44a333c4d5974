#!/usr/bin/env bash
# Smoke test of the container: build the image, run the demo in it, wait until the health check
# passes, fetch the dashboard's page, stop the container, then run the installed `relink-audit`
# (--help, demo --no-serve on the kept results) in a second container with no network. Exits
# non-zero on any failure.
#
#   docker/smoke.sh                       # defaults: public python:3.11-slim base, bridge network
#   BASE=local/python:3.11 NETWORK=host CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt docker/smoke.sh
#
# Variables: IMAGE (tag), BASE (base image), CA_BUNDLE (a CA file given to pip at build time as a
# BuildKit secret, never stored in the image), EXTRA_INDEX_URL (extra package indexes), NETWORK
# (`host` builds and runs on the host's network; the dashboard then listens on 127.0.0.1 only),
# PORT (host port, published on 127.0.0.1), TIMEOUT (seconds to wait for the health check),
# KEEP_VOLUME=1 (keep the results volume for a faster second run), RUN_ARGS (extra `docker run`
# arguments for the demo's container, e.g. `--cpus 1` on a shared machine), DOCKER (the client; it
# needs BuildKit: Docker >= 23 with buildx, or the 20.10 client with DOCKER_BUILDKIT=1).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-relink-audit:smoke}
DOCKER=${DOCKER:-docker}
BASE=${BASE:-python:3.11-slim}
PORT=${PORT:-8501}
TIMEOUT=${TIMEOUT:-2400}
NETWORK=${NETWORK:-}
VOLUME=${VOLUME:-relink-smoke-cache}
NAME=relink-smoke-$$
export DOCKER_BUILDKIT=1

log() { printf '[smoke %(%H:%M:%S)T] %s\n' -1 "$*"; }
now() { date +%s; }

build=("$DOCKER" build -t "$IMAGE" --build-arg "BASE=$BASE")
[ -n "${EXTRA_INDEX_URL:-}" ] && build+=(--build-arg "EXTRA_INDEX_URL=$EXTRA_INDEX_URL")
if [ -n "${CA_BUNDLE:-}" ]; then
  [ -r "$CA_BUNDLE" ] || { echo "CA_BUNDLE=$CA_BUNDLE: not a readable file" >&2; exit 2; }
  build+=(--secret "id=ca,src=$CA_BUNDLE")
fi
[ "$NETWORK" = host ] && build+=(--network host)

t0=$(now)
log "building $IMAGE from $BASE"
"${build[@]}" .
t1=$(now)
size=$("$DOCKER" image inspect "$IMAGE" --format '{{.Size}}')
log "built in $((t1 - t0)) s; image size $((size / 1000000)) MB"

run=("$DOCKER" run -d --name "$NAME" -v "$VOLUME:/app/cache")
# shellcheck disable=SC2206 # RUN_ARGS is a list of words on purpose
[ -n "${RUN_ARGS:-}" ] && run+=($RUN_ARGS)
if [ "$NETWORK" = host ]; then
  # no port mapping on the host network: bind the dashboard to loopback only
  run+=(--network host -e STREAMLIT_SERVER_ADDRESS=127.0.0.1 -e "STREAMLIT_SERVER_PORT=$PORT")
else
  run+=(-p "127.0.0.1:$PORT:8501")
fi
cleanup() {
  "$DOCKER" logs "$NAME" > "${SMOKE_LOG:-/tmp/relink-smoke.log}" 2>&1 || true
  "$DOCKER" rm -f "$NAME" > /dev/null 2>&1 || true
  [ "${KEEP_VOLUME:-0}" = 1 ] || "$DOCKER" volume rm "$VOLUME" > /dev/null 2>&1 || true
}
trap cleanup EXIT
"${run[@]}" "$IMAGE" > /dev/null
log "container $NAME started (demo, then dashboard on 127.0.0.1:$PORT)"

status=starting
while [ "$status" != healthy ]; do
  state=$("$DOCKER" inspect "$NAME" --format '{{.State.Status}}')
  if [ "$state" != running ]; then
    "$DOCKER" logs --tail 30 "$NAME" >&2 || true
    echo "container stopped ($state) before it became healthy" >&2
    exit 1
  fi
  if [ $(( $(now) - t1 )) -gt "$TIMEOUT" ]; then
    echo "not healthy after $TIMEOUT s" >&2
    exit 1
  fi
  sleep 10
  status=$("$DOCKER" inspect "$NAME" --format '{{.State.Health.Status}}')
done
t2=$(now)
log "healthy after $((t2 - t1)) s"

page=$(curl -fsS "http://127.0.0.1:$PORT/")
grep -q "<title>" <<< "$page" || { echo "the page has no <title>" >&2; exit 1; }
curl -fsS "http://127.0.0.1:$PORT/_stcore/health" | grep -q ok
"$DOCKER" logs "$NAME" 2>&1 | grep -q "all stages done" || { echo "demo did not finish" >&2; exit 1; }
log "page fetched; stopping"
"$DOCKER" stop -t 10 "$NAME" > /dev/null

# The installed package's command in a second container without any network: its help, then
# `relink-audit demo --no-serve` on the same results volume (every stage reuses its results).
"$DOCKER" run --rm --network none "$IMAGE" relink-audit --help | grep -q "^usage: relink-audit" \
  || { echo "relink-audit --help failed" >&2; exit 1; }
again=$("$DOCKER" run --rm --network none -v "$VOLUME:/app/cache" "$IMAGE" \
  relink-audit demo --no-serve 2>&1) || { tail -30 <<< "$again" >&2; exit 1; }
grep -q "all stages done" <<< "$again" || { echo "relink-audit demo --no-serve did not finish" >&2; exit 1; }
t3=$(now)
log "relink-audit --help and relink-audit demo --no-serve (results reused) in $((t3 - t2)) s"
log "passed: build $((t1 - t0)) s, demo to healthy $((t2 - t1)) s, image $((size / 1000000)) MB"

#!/usr/bin/env bash
# docker-build-local.sh [--smoke]: build the node image on a machine that cannot pull images,
# and with --smoke run it as a user would (read-only rootfs, tmpfs /tmp) and check uid 10001,
# /healthz, /set + /get, and that SIGTERM (docker stop) exits 0.
#
# The build is `scripts/images.sh node`: a debootstrapped bookworm base (distcache/python-base)
# when python:3.11-slim is not present, host-built wheels when containers cannot reach PyPI.
# The same checks run as a test: e2e/test_image.py (marker `docker`, in `make e2e-kind`).
# Settings (environment): NODE_IMAGE (distcache/node:<version>), SMOKE_PORT (18090).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -1)
export NODE_IMAGE=${NODE_IMAGE:-distcache/node:$VERSION}
SMOKE_PORT=${SMOKE_PORT:-18090}
log() { printf '== %s\n' "$*"; }

"$ROOT/scripts/kind/ensure-docker.sh"
"$ROOT/scripts/images.sh" node
[ "${1:-}" = "--smoke" ] || exit 0

log "smoke test on 127.0.0.1:$SMOKE_PORT"
cid=$(docker run -d --read-only --tmpfs /tmp -p "127.0.0.1:$SMOKE_PORT:8080" "$NODE_IMAGE" --api-key k)
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
url=http://127.0.0.1:$SMOKE_PORT
for _ in $(seq 50); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
uid=$(docker exec "$cid" id -u)
echo "uid: $uid"; [ "$uid" = 10001 ]
echo "healthz: $(curl -fsS "$url/healthz")"
echo "set: $(curl -fsS -X POST "$url/set" -H 'X-API-Key: k' -H 'Content-Type: application/json' \
  -d '{"key":"smoke","value":{"ok":true}}')"
got=$(curl -fsS "$url/get?key=smoke" -H 'X-API-Key: k'); echo "get: $got"
case $got in *'"ok":true'*) ;; *) echo "unexpected /get answer" >&2; exit 1 ;; esac
start=$(date +%s.%N)
docker stop -t 10 "$cid" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
echo "docker stop: exit code $code after $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
[ "$code" = 0 ]
log "smoke test passed"

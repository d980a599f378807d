#!/usr/bin/env bash
# docker-build-local.sh [--smoke]: build node/Dockerfile on a machine that cannot pull images.
#
# Steps, each skipped when already done (safe to run again):
#   1. debootstrap a Debian bookworm rootfs with python3/python3-venv into $ROOTFS (root needed);
#   2. `docker import` it as $BASE_IMAGE;
#   3. if containers cannot reach PyPI, `pip wheel` the project and its dependencies on the host
#      into .build/wheels (gitignored) for an offline `--no-index` install inside the build;
#   4. docker build -f node/Dockerfile --build-arg PYTHON_IMAGE=$BASE_IMAGE -t $IMAGE .
# With --smoke it then runs the image as a user would (read-only rootfs, tmpfs /tmp) and checks
# uid 10001, /healthz, /set + /get, and that SIGTERM (docker stop) exits 0.
#
# Needs a running dockerd. Not part of `make test`: CI does not depend on Docker.
# Settings (environment): ROOTFS (/tmp/distcache-rootfs), BASE_IMAGE (distcache-base:bookworm),
# IMAGE (distcache-node:local), DEBIAN_MIRROR (http://deb.debian.org/debian),
# WHEELS (auto|yes|no: offline install from host wheels), SMOKE_PORT (18090).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROOTFS=${ROOTFS:-/tmp/distcache-rootfs}
BASE_IMAGE=${BASE_IMAGE:-distcache-base:bookworm}
IMAGE=${IMAGE:-distcache-node:local}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WHEELS=${WHEELS:-auto}
SMOKE_PORT=${SMOKE_PORT:-18090}
WHEEL_DIR=$ROOT/.build/wheels      # the one path under .build/ that .dockerignore lets through
NICE=(nice -n 10)                   # shared machines: keep the builds polite
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1

log() { printf '== %s\n' "$*"; }
docker info >/dev/null 2>&1 || { echo "docker daemon not reachable (start dockerd first)" >&2; exit 1; }

# --- 1+2. base image ---------------------------------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE exists"
else
  [ "$(id -u)" -eq 0 ] || { echo "building the base rootfs needs root" >&2; exit 1; }
  "$ROOT/scripts/ensure-debs.sh" debootstrap=debootstrap
  if [ ! -e "$ROOTFS/.distcache-ready" ]; then
    if [ ! -x "$ROOTFS/usr/bin/apt-get" ]; then
      log "debootstrap bookworm -> $ROOTFS"
      rm -rf "$ROOTFS"
      "${NICE[@]}" debootstrap --variant=minbase bookworm "$ROOTFS" "$DEBIAN_MIRROR"
    fi
    log "installing python3 in $ROOTFS"
    cat > "$ROOTFS/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
    trap 'umount "$ROOTFS/proc" 2>/dev/null || true' EXIT
    "${NICE[@]}" chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends \
               python3 python3-venv python3-pip passwd ca-certificates >/dev/null \
             && apt-get clean && rm -rf /var/lib/apt/lists/*'
    umount "$ROOTFS/proc"; trap - EXIT
    : > "$ROOTFS/etc/resolv.conf"   # docker provides its own at run time
    touch "$ROOTFS/.distcache-ready"
  fi
  log "docker import $ROOTFS -> $BASE_IMAGE"
  tar -C "$ROOTFS" --exclude=./.distcache-ready -c . \
    | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
fi

# --- 3. offline wheels when containers cannot reach PyPI ---------------------------------------
build_args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE")
if [ "$WHEELS" = auto ]; then
  if docker run --rm "$BASE_IMAGE" python3 -c \
      'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10)' \
      >/dev/null 2>&1; then
    WHEELS=no
  else
    WHEELS=yes
  fi
  log "containers reach PyPI: $([ "$WHEELS" = no ] && echo yes || echo no)"
fi
if [ "$WHEELS" = yes ]; then
  py=$ROOT/.venv/bin/python; [ -x "$py" ] || py=python3
  want=$(docker run --rm "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$want" = "$have" ] || { echo "host python $have != image python $want: wheels would not fit" >&2; exit 1; }
  log "pip wheel . -> $WHEEL_DIR"
  mkdir -p "$WHEEL_DIR"
  rm -f "$WHEEL_DIR"/distcache-*.whl   # always the current sources; dependencies are reused
  # A fixed SOURCE_DATE_EPOCH makes the wheel byte-identical for unchanged sources, so the
  # build's COPY layer (and everything after it) stays cached on a repeat run.
  (cd "$ROOT" && SOURCE_DATE_EPOCH=315532800 "${NICE[@]}" \
     "$py" -m pip wheel -q . -w "$WHEEL_DIR" 2> >(grep -v -e '^ ' -e '^$' >&2))
  build_args+=(--build-arg PIP_FIND_LINKS=/wheels)
else
  rm -rf "$WHEEL_DIR"   # keep the build context lean when the index is reachable
fi

# --- 4. the image (layer cache makes a repeat build quick) -------------------------------------
log "docker build -> $IMAGE"
(cd "$ROOT" && DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} "${NICE[@]}" \
  docker build -q -f node/Dockerfile "${build_args[@]}" -t "$IMAGE" .)
docker image ls "$IMAGE" --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}'

[ "$SMOKE" -eq 1 ] || exit 0

# --- smoke: run it as a user would --------------------------------------------------------------
log "smoke test on 127.0.0.1:$SMOKE_PORT"
cid=$(docker run -d --read-only --tmpfs /tmp -p "127.0.0.1:$SMOKE_PORT:8080" "$IMAGE" --api-key k)
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

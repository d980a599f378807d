#!/usr/bin/env bash
# ensure-docker.sh: make a Docker engine answer on this machine, or say exactly why not.
#   - docker.io (Debian) installed when dockerd is missing and we are root with apt-get;
#   - where the capability bounding set lacks capabilities (some VMs), the runc-boundcaps runtime
#     wrapper becomes Docker's default runtime: `--privileged` (kind's node containers) then works;
#   - dockerd started in the background with a plain system PATH, log in $KIND_CACHE/dockerd.log.
# A dockerd that already answers is left alone.
set -euo pipefail
. "$(dirname "$0")/common.sh"

if docker info >/dev/null 2>&1; then exit 0; fi

[ "$(id -u)" -eq 0 ] || die "Docker engine not reachable, and starting dockerd needs root"
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  "$REPO_ROOT/scripts/ensure-debs.sh" dockerd=docker.io docker=docker.io
fi

bounding_set_incomplete() {
  local last bnd full
  last=$(cat /proc/sys/kernel/cap_last_cap)
  bnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
  full=$(( (1 << (last + 1)) - 1 ))
  [ $(( 16#$bnd & full )) -ne "$full" ]
}

mkdir -p /etc/docker "$KIND_CACHE"
if bounding_set_incomplete; then
  log "capability bounding set $(awk '/^CapBnd:/ { print $2 }' /proc/self/status) lacks capabilities: using runc-boundcaps as Docker's default runtime"
  install -m 755 "$KIND_SCRIPTS/runc-boundcaps" /usr/local/bin/runc-boundcaps
  want='{"runtimes":{"boundcaps":{"path":"/usr/local/bin/runc-boundcaps"}},"default-runtime":"boundcaps"}'
  if [ ! -s /etc/docker/daemon.json ]; then
    echo "$want" > /etc/docker/daemon.json
  elif ! grep -q boundcaps /etc/docker/daemon.json; then
    die "/etc/docker/daemon.json exists without the boundcaps runtime; add: $want"
  fi
fi

log "starting dockerd (log: $KIND_CACHE/dockerd.log)"
# setsid + nohup: dockerd outlives this script and the make that ran it.
PATH=/usr/sbin:/usr/bin:/sbin:/bin setsid nohup dockerd >>"$KIND_CACHE/dockerd.log" 2>&1 < /dev/null &
echo $! > "$KIND_CACHE/dockerd.pid"
for _ in $(seq 120); do
  docker info >/dev/null 2>&1 && { log "dockerd up (pid $(cat "$KIND_CACHE/dockerd.pid"))"; exit 0; }
  kill -0 "$(cat "$KIND_CACHE/dockerd.pid")" 2>/dev/null || break
  sleep 0.5
done
tail -20 "$KIND_CACHE/dockerd.log" >&2
die "dockerd did not come up: $(grep -v '^[[:space:]]*$' "$KIND_CACHE/dockerd.log" | tail -1 | cut -c1-300) (log: $KIND_CACHE/dockerd.log)"

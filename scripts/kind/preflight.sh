#!/usr/bin/env bash
# preflight.sh [--start-docker]: can this machine run the kind test bed? Prints one line per
# requirement and, for each one missing, exactly what is missing and how to get it. Exit 0 when
# everything is there, 1 otherwise (the last line then starts with "kind tier unavailable:").
# With --start-docker a stopped Docker engine is started (scripts/kind/ensure-docker.sh) when it
# can be; without it, "dockerd installed or installable, we are root" counts as present.
set -uo pipefail
. "$(dirname "$0")/common.sh"
START=0; [ "${1:-}" = --start-docker ] && START=1
missing=()
ok() { printf '  ok       %s\n' "$*"; }
miss() { printf '  MISSING  %s\n' "$*"; missing+=("$1"); }

echo "kind test bed preflight (cache: $KIND_CACHE)"
root=0; [ "$(id -u)" -eq 0 ] && root=1

# 1. Docker engine.
if docker info >/dev/null 2>&1; then
  ok "Docker engine: $(docker version -f '{{.Server.Version}}' 2>/dev/null) answering"
elif [ $root -eq 1 ] && { command -v dockerd >/dev/null || command -v apt-get >/dev/null; }; then
  if [ $START -eq 1 ]; then
    if "$KIND_SCRIPTS/ensure-docker.sh" >/dev/null 2>"$KIND_CACHE/ensure-docker.err"; then
      ok "Docker engine: started"
    else
      miss "Docker engine: dockerd does not start here: $(tail -1 "$KIND_CACHE/ensure-docker.err" 2>/dev/null)"
    fi
  else
    ok "Docker engine: not running; will be started (dockerd $(command -v dockerd >/dev/null && echo installed || echo 'to install from Debian: docker.io'))"
  fi
else
  if [ $root -eq 0 ]; then
    miss "Docker engine: not reachable, and not root to install/start dockerd (run as root or start dockerd)"
  else
    miss "Docker engine: no dockerd and no apt-get to install docker.io"
  fi
fi

# 2. Runtime wrapper, where the capability bounding set is incomplete (kind needs --privileged).
last=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)
bnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
full=$(( (1 << (last + 1)) - 1 ))
if [ $(( 16#$bnd & full )) -eq "$full" ]; then
  ok "capabilities: full bounding set, no runtime wrapper needed"
else
  runtime=$(docker info -f '{{.DefaultRuntime}}' 2>/dev/null || true)
  if [ -z "$runtime" ]; then
    ok "capabilities: bounding set $bnd is incomplete; runc-boundcaps will be Docker's default runtime when dockerd starts"
  elif [ "$runtime" = boundcaps ] && [ -x /usr/local/bin/runc-boundcaps ]; then
    ok "capabilities: bounding set $bnd is incomplete; Docker's default runtime is runc-boundcaps"
  else
    miss "runtime wrapper: bounding set $bnd lacks capabilities but dockerd's default runtime is '$runtime': restart dockerd with scripts/kind/runc-boundcaps as default runtime (see scripts/kind/ensure-docker.sh)"
  fi
fi

# 3. cgroups: v1 with the controllers kind's nodes need, or v2.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  ok "cgroups: v2 ($(tr '\n' ' ' < /sys/fs/cgroup/cgroup.controllers))"
elif [ -d /sys/fs/cgroup ]; then
  lacking=()
  for c in cpu cpuacct cpuset memory pids devices freezer; do
    grep -qw "$c" /proc/self/cgroup 2>/dev/null || lacking+=("$c")
  done
  if [ ${#lacking[@]} -eq 0 ]; then ok "cgroups: v1 (kind $KIND_VERSION still supports it; later releases do not)"
  else miss "cgroups: v1 hierarchy lacks controllers: ${lacking[*]}"; fi
else
  miss "cgroups: /sys/fs/cgroup is not mounted"
fi
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null
grep -qw overlay /proc/filesystems && ok "kernel: overlayfs" || miss "kernel: no overlayfs (modprobe overlay)"

# 4. Disk and memory. Cold: Go caches ~8 GB + images ~3 GB; warm: a running cluster ~2 GB.
node_image=$("$KIND_SCRIPTS/build-node-image.sh" --name 2>/dev/null)
if docker image inspect "$node_image" >/dev/null 2>&1; then need=3; else need=14; fi
for d in "$DISTCACHE_DEV_CACHE" "${GOPATH:-$HOME/go}" /var/lib/docker; do
  p=$d; while [ ! -e "$p" ]; do p=$(dirname "$p"); done
  avail=$(( $(df -Pk "$p" | awk 'NR==2 { print $4 }') / 1024 / 1024 ))
  if [ "$avail" -ge "$need" ]; then ok "disk: ${avail} GiB free for $d (need ~${need} GiB)"
  else miss "disk: only ${avail} GiB free for $d, need ~${need} GiB"; fi
done
mem=$(( $(awk '/MemAvailable/ { print $2 }' /proc/meminfo) / 1024 / 1024 ))
[ "$mem" -ge 2 ] && ok "memory: ${mem} GiB available" || miss "memory: ${mem} GiB available, need 2 GiB"

# 5. Build tools, only when the node image is not built yet.
if ! docker image inspect "$node_image" >/dev/null 2>&1; then
  if command -v go >/dev/null; then ok "Go: $(go version | awk '{ print $3 }') (node image $node_image to build)"
  else miss "Go toolchain: go >= 1.24 on PATH (to build the Kubernetes binaries)"; fi
  command -v gcc >/dev/null && ok "gcc (pause)" || miss "gcc: apt-get install gcc libc6-dev (pause is a static C program)"
  if command -v debootstrap >/dev/null || { [ $root -eq 1 ] && command -v apt-get >/dev/null; }; then ok "debootstrap (or installable)"
  else miss "debootstrap: apt-get install debootstrap (as root)"; fi
  [ $root -eq 1 ] && ok "root (chroot, debootstrap)" || miss "root: building the Debian base images needs root"
else
  ok "node image $node_image: built"
fi

if [ ${#missing[@]} -gt 0 ]; then
  joined=$(printf '%s; ' "${missing[@]}")
  echo "kind tier unavailable: ${joined%; }"
  exit 1
fi
echo "kind test bed: all requirements met"

# Debian rootfs images without a registry (sourced by the image scripts, not run).
# One debootstrap --variant=minbase of $DEBIAN_SUITE is kept as a tarball in $KIND_CACHE/rootfs;
# each image is that tarball plus apt packages (installed in a chroot) turned into a Docker
# image with `docker import`. Needs root, debootstrap (installed when missing) and the Debian
# mirror ($DEBIAN_MIRROR).
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS_CACHE=$KIND_CACHE/rootfs
MINBASE_TAR=$ROOTFS_CACHE/$DEBIAN_SUITE-minbase.tar

ensure_minbase() {
  [ -s "$MINBASE_TAR" ] && return
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  "$REPO_ROOT/scripts/ensure-debs.sh" debootstrap=debootstrap
  local dir=$ROOTFS_CACHE/minbase.tmp
  rm -rf "$dir"; mkdir -p "$dir"
  log "debootstrap --variant=minbase $DEBIAN_SUITE"
  "${NICE[@]}" debootstrap --variant=minbase "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" > "$ROOTFS_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$ROOTFS_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $ROOTFS_CACHE/debootstrap.log)"; }
  cat > "$dir/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $DEBIAN_SUITE-security main
SRC
  tar -C "$dir" -cf "$MINBASE_TAR.tmp" . && mv "$MINBASE_TAR.tmp" "$MINBASE_TAR"
  rm -rf "$dir"
}

# rootfs_chroot DIR CMD...: run CMD in the rootfs with /proc, /dev and the host's DNS.
rootfs_chroot() {
  local dir=$1; shift
  mount -t proc proc "$dir/proc"
  mount --bind /dev "$dir/dev"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  local rc=0
  "${NICE[@]}" chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@" || rc=$?
  umount "$dir/dev" "$dir/proc"
  : > "$dir/etc/resolv.conf"   # Docker provides its own at run time
  return $rc
}

# build_rootfs_image IMAGE "PACKAGES" [CUSTOMIZE_FUNCTION]: minbase + packages (+ a function
# called with the rootfs dir before the import) -> docker image IMAGE. Skipped when IMAGE exists.
build_rootfs_image() {
  local image=$1 packages=$2 customize=${3:-}
  docker image inspect "$image" >/dev/null 2>&1 && { log "$image exists"; return; }
  ensure_minbase
  local dir=$ROOTFS_CACHE/work-${image//[\/:]/_}
  rm -rf "$dir"; mkdir -p "$dir"
  tar -C "$dir" -xf "$MINBASE_TAR"
  log "$image: apt-get install $packages"
  # Services must not start inside the chroot.
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"; chmod 755 "$dir/usr/sbin/policy-rc.d"
  rootfs_chroot "$dir" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>/dev/null || apt-get install -y --no-install-recommends $packages" \
    || { rm -rf "$dir"; die "apt-get install failed for $image"; }
  [ -z "$customize" ] || "$customize" "$dir"
  rootfs_chroot "$dir" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /usr/share/doc/* /usr/share/man/* /var/log/*.log /tmp/* /var/tmp/*'
  rm -f "$dir/usr/sbin/policy-rc.d"
  log "docker import -> $image"
  tar -C "$dir" -c . | docker import --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
  rm -rf "$dir"
}

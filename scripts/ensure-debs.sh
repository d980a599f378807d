#!/usr/bin/env bash
# ensure-debs.sh BIN=PACKAGE ...: install the Debian packages whose binaries are missing.
# Used by `make test` and `make bench` so both work on a fresh machine.
set -euo pipefail
missing=()
for pair in "$@"; do
  bin=${pair%%=*}; pkg=${pair#*=}
  command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing Debian packages: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

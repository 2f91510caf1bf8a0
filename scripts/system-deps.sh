#!/usr/bin/env bash
# Installs the system packages the image and monitoring tests need, when missing:
#   podman, debootstrap, runc  build and run the images and pods (scripts/build-image.sh)
#   prometheus                 promtool (rule checks and unit tests) and a real Prometheus
# Debian/Ubuntu with apt-get, as root. Idempotent: a machine that has them all
# returns at once without touching apt. Services of the installed packages are
# not started (a temporary policy-rc.d denies it), so no Prometheus daemon
# appears on :9090. Without root it prints the apt-get line to run and fails.
set -euo pipefail
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]}; as root: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# harness-pool scripts/system-deps.sh: start no service during this install\nexit 101\n' > "$policy"
  chmod +x "$policy"
  own_policy=1
fi
trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# podman with its recommends (netavark, conmon, slirp, ...); the rest without.
for pkg in "${missing[@]}"; do
  if [ "$pkg" = podman ]; then
    apt-get install -y -qq podman >/dev/null
  else
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  fi
done
echo "system-deps: done" >&2

#!/usr/bin/env bash
# Prints the name of a Python base image for the Dockerfile's PYTHON_IMAGE,
# building a local one first when the official image cannot be had.
#
#   scripts/build-base.sh            # -> python:3.11.7-slim-bookworm, or localhost/harness-pool-base:bookworm-<key>
#
# 1. If the official base (OFFICIAL_BASE) is in local storage, or can be pulled,
#    that is the answer.
# 2. Otherwise (no registry reachable) build `localhost/harness-pool-base` with
#    debootstrap --variant=minbase from the Debian mirror apt already uses, with
#    Debian's Python 3.11 (python3, venv, pip, headers for C extensions) and the
#    host's extra trusted CA certificates (HTTPS from inside a build goes through
#    the same proxy as the host's), and `podman import` it. The tag carries a key
#    of this script and those certificates, so a second run finds it and returns
#    in a second; old keys are removed.
#
# Needs root (debootstrap, chroot), podman and debootstrap (scripts/system-deps.sh).
# Progress goes to stderr; only the image name goes to stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
podman="$here/podman.sh"
OFFICIAL_BASE="${OFFICIAL_BASE:-python:3.11.7-slim-bookworm}"
SUITE=bookworm
PACKAGES="python3,python3-venv,python3-pip,python-is-python3,libpython3.11-dev,ca-certificates"
log() { echo "build-base: $*" >&2; }

if [ "${HARNESS_POOL_LOCAL_BASE:-}" != "1" ]; then
  if "$podman" image exists "$OFFICIAL_BASE" \
     || timeout 120 "$podman" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    echo "$OFFICIAL_BASE"
    exit 0
  fi
  log "$OFFICIAL_BASE cannot be pulled; using a local Debian $SUITE base"
fi

extra_certs=(/usr/local/share/ca-certificates/*.crt)
[ -e "${extra_certs[0]}" ] || extra_certs=()
key=$( (cat "$0"; echo "$PACKAGES"; for c in "${extra_certs[@]}"; do cat "$c"; done) \
       | sha256sum | cut -c1-12)
image="localhost/harness-pool-base:$SUITE-$key"
if "$podman" image exists "$image"; then
  echo "$image"
  exit 0
fi

# The mirror apt uses on this machine (deb822 sources first, then sources.list).
mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
         | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1 || true)
fi
mirror="${mirror:-http://deb.debian.org/debian}"

root=$(mktemp -d /var/tmp/harness-pool-base.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
log "debootstrap $SUITE from $mirror into $root (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >&2
for c in "${extra_certs[@]}"; do
  cp "$c" "$root/usr/local/share/ca-certificates/"
done
chroot "$root" update-ca-certificates >&2
# Image hygiene: no apt lists or caches in the base; apt-get update in a build
# fetches them again. deb822 sources for the same mirror, security included.
cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
SOURCES
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | "$podman" import \
  --change 'CMD ["python3"]' \
  --change 'ENV LANG=C.UTF-8' \
  --message "harness-pool local base: debootstrap $SUITE + $PACKAGES" \
  - "$image" >/dev/null
for old in $("$podman" images --format '{{.Repository}}:{{.Tag}}' localhost/harness-pool-base); do
  [ "$old" = "$image" ] || "$podman" rmi "$old" >/dev/null 2>&1 || true
done
log "built $image"
echo "$image"

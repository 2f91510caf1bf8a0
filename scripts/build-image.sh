#!/usr/bin/env bash
# Builds the harness-pool images with podman, unless an image of the same
# content is already there.
#
#   scripts/build-image.sh beam           # harness-pool:<version>-py<X.Y>-beam<A.B>   (alias <version>)
#   scripts/build-image.sh pyflink        # harness-pool:<version>-py<X.Y>-beam<A.B>-pyflink<C.D>
#                                         #                                    (alias <version>-pyflink)
#   scripts/build-image.sh taskmanager    # harness-pool-taskmanager:pyflink<C.D> (tests only)
#
# Prints the image's full tag on stdout (progress on stderr).
#
# Content key: a hash of everything that goes into the image (Dockerfile,
# .dockerignore, pyproject.toml, README.md, harness_pool/ without caches, or for
# the taskmanager image every file of its folder; this script, the variant and
# the base image's id). The key is a label of the
# image; when the tagged image carries the current key nothing is built, so a
# second `make test` or `make image` costs a second. Within a build, the
# dependency layer depends on pyproject.toml only (see the Dockerfile), so a
# change of code rebuilds a few seconds' worth.
#
# The tag names what the image carries, read from the image itself: Python
# minor version, Beam minor version, and PyFlink's for the pyflink variant.
# Manifests in k8s/ use these tags (tests/k8s/test_image.py checks they agree).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
podman="$here/podman.sh"
variant="${1:?usage: build-image.sh beam|pyflink|taskmanager}"
log() { echo "build-image[$variant]: $*" >&2; }

base=$("$here/build-base.sh")
base_id=$("$podman" image inspect --format '{{.Id}}' "$base")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)

case "$variant" in
  beam)        extras="";      file="$root/Dockerfile"; context="$root" ;;
  pyflink)     extras="flink"; file="$root/Dockerfile"; context="$root" ;;
  taskmanager) extras="";      file="$root/tests/k8s/images/taskmanager.Dockerfile"
               context="$root/tests/k8s/images" ;;
  *) echo "build-image.sh: unknown variant '$variant' (beam, pyflink, taskmanager)" >&2; exit 2 ;;
esac

key=$( (
  cd "$root"
  echo "$variant $base_id"
  cat "$0" "$file"
  if [ "$variant" = taskmanager ]; then
    files=$(cd "$context" && find . -type f ! -name '*.pyc' | LC_ALL=C sort)
    for f in $files; do echo "$f"; cat "$context/$f"; done
  else
    cat .dockerignore pyproject.toml README.md
    find harness_pool -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort \
      | while read -r f; do echo "$f"; cat "$f"; done
  fi
) | sha256sum | cut -c1-16)

cache_tag="localhost/harness-pool-cache:$variant"
have=$("$podman" image inspect --format '{{index .Labels "io.harness-pool.content-key"}}' \
       "$cache_tag" 2>/dev/null || true)
if [ "$have" != "$key" ]; then
  log "building from $base (content key $key)"
  start=$(date +%s)
  "$podman" build --network=host --layers \
    --build-arg "PYTHON_IMAGE=$base" --build-arg "EXTRAS=$extras" \
    --label "io.harness-pool.content-key=$key" \
    -f "$file" -t "$cache_tag" "$context" >&2
  log "built in $(( $(date +%s) - start )) s"
fi

# What the image carries, from the image itself (no entrypoint: tini is not in the TM image).
probe='import sys, importlib.metadata as m
def v(d):
    try:
        return ".".join(m.version(d).split(".")[:2])
    except m.PackageNotFoundError:
        return ""
print("%d.%d" % sys.version_info[:2], v("apache-beam"), v("apache-flink"))'
case "$variant" in
  taskmanager) py=/opt/flink-venv/bin/python ;;
  *)           py=/opt/harness-pool/bin/python ;;
esac
read -r pyv beamv flinkv < <("$podman" run --rm --network=none --entrypoint "$py" "$cache_tag" -c "$probe")
case "$variant" in
  beam)        tag="localhost/harness-pool:$version-py$pyv-beam$beamv" ;;
  pyflink)     tag="localhost/harness-pool:$version-py$pyv-beam$beamv-pyflink$flinkv" ;;
  taskmanager) tag="localhost/harness-pool-taskmanager:py$pyv-pyflink$flinkv" ;;
esac
"$podman" tag "$cache_tag" "$tag"
# Short aliases (like python:3.11 beside python:3.11.7) for manifests that name no versions.
case "$variant" in
  beam)    "$podman" tag "$cache_tag" "localhost/harness-pool:$version" ;;
  pyflink) "$podman" tag "$cache_tag" "localhost/harness-pool:$version-pyflink" ;;
esac
echo "$tag"

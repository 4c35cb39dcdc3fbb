#!/usr/bin/env bash
# Builds Cyclone's service image (deploy/Dockerfile) on this machine, where nothing can be
# pulled and `docker build` cannot reach PyPI:
#   * the base is cyclone-base/bookworm:python (scripts/build-base-image.sh, cached);
#   * the wheels of deploy/requirements.lock are downloaded by the host's pip (hashes
#     checked) into .cache/image-wheels once per lock, copied into deploy/wheels (the build
#     context; ignored by Git), and installed with --no-index.
# Usage: scripts/build-image.sh [TAG]   (default cyclone:dev); with --deps-only, only the base
# and the wheels (what `make test`'s setup prepares). Idempotent: with the base and
# the wheels cached, an unchanged tree is a build of cached layers (seconds). Build the web
# UI first (`make ui`) for the image to serve it. Production builds need none of this:
#   docker build -f deploy/Dockerfile -t cyclone .
set -euo pipefail

deps_only=0
if [ "${1:-}" = --deps-only ]; then
  deps_only=1
  shift
fi
tag=${1:-cyclone:dev}
base=cyclone-base/bookworm:python
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/deploy/requirements.lock"
cache="$root/.cache/image-wheels"
stamp="$cache/lock.sha256"
context_wheels="$root/deploy/wheels"
python="$root/.venv/bin/python"

bash "$root/scripts/build-base-image.sh"

want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "build-image: downloading the wheels of deploy/requirements.lock into $cache" >&2
  rm -rf "$cache.new"
  # Wheels for the image's Python (CPython 3.11 on glibc x86_64), whatever the host's is.
  "$python" -m pip download -q --require-hashes --no-deps --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform linux_x86_64 --platform any \
    -r "$lock" -d "$cache.new"
  echo "$want" >"$cache.new/lock.sha256"
  rm -rf "$cache"
  mv "$cache.new" "$cache"
fi

[ "$deps_only" = 0 ] || exit 0

# The context gets exactly the lock's wheels (none left from an older lock).
find "$context_wheels" -name '*.whl' -delete
cp "$cache"/*.whl "$context_wheels/"

# The build stage is tagged too ("TAG-build"): it holds the layer cache of the next build
# (the installed dependencies). What an earlier build of either tag left is removed, so
# rebuilds of a changing tree do not pile up untagged images.
stage_tag="${tag%:*}-build:${tag##*:}"
[ "$tag" != "${tag%:*}" ] || stage_tag="$tag-build"
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
old_ids="$(image_id "$tag") $(image_id "$stage_tag")"
build() {
  docker build -q -f "$root/deploy/Dockerfile" --build-arg "BASE=$base" \
    --build-arg "PIP_INSTALL_ARGS=--no-index --find-links /wheels" "$@" "$root" >/dev/null
}
build --target build -t "$stage_tag"
build -t "$tag"
new_ids="$(image_id "$tag") $(image_id "$stage_tag")"
for id in $old_ids; do
  case " $new_ids " in
    *" $id "*) ;;
    *) docker rmi "$id" >/dev/null 2>&1 || true ;;  # a container may still use it: leave it
  esac
done
echo "build-image: built $tag ($(docker image inspect -f '{{.Size}}' "$tag" \
  | awk '{printf "%.0f MB", $1 / 1e6}'))" >&2

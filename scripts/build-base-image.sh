#!/usr/bin/env bash
# Makes the base image deploy/Dockerfile builds on where no image can be pulled:
#   cyclone-base/bookworm:python  Debian 12 (debootstrap --variant=minbase) with python3 (3.11,
#                                 what requirements.lock is for), python3-venv and
#                                 ca-certificates; docs, man pages, locales and apt's lists
#                                 removed. Production builds use python:3.11-slim instead.
# Idempotent and quick when done: nothing runs while the image is there; else the root
# filesystem's tarball kept in .cache/base-image/ is imported (seconds); only when that is
# missing too does debootstrap run (minutes, from Debian's mirror). Needs a reachable daemon
# (scripts/setup-docker.sh); installs debootstrap with apt-get when missing.
set -euo pipefail

image=cyclone-base/bookworm:python
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/base-image"
tarball="$cache/bookworm-python.tar.gz"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build-base-image: installing debootstrap" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  rootfs=$work/rootfs
  echo "build-base-image: debootstrap of Debian bookworm into $rootfs (a few minutes)" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
      tail -n 30 "$work/debootstrap.log" >&2
      exit 1
    }
  # What a container never reads: apt's package lists and downloads, docs, man pages,
  # translations, and Python's byte code (written again on first import, as in python:slim).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/debootstrap
  find "$rootfs/usr/lib/python3" "$rootfs/usr/lib/python3.11" -name __pycache__ -prune \
    -exec rm -rf {} +
  mkdir -p "$cache"
  # Written aside, then moved: an interrupted run never leaves a half tarball behind.
  tar --numeric-owner -C "$rootfs" -czf "$tarball.new" .
  mv "$tarball.new" "$tarball"
fi

# The config the official python images have, so the Dockerfile works on either base.
docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' "$tarball" "$image" >/dev/null
echo "build-base-image: imported $image from $tarball" >&2

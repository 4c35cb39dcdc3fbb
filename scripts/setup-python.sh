#!/usr/bin/env bash
# Creates .venv and installs into it exactly what requirements.lock pins (hash-checked),
# then Cyclone itself, editable. Idempotent: when requirements.lock and pyproject.toml
# are what the last install saw (their hash is kept in the stamp), it does nothing.
# With --uv-only it stops once .venv has the locked uv (what `make lock` needs).
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements.lock
stamp=.venv/.installed
want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != --uv-only ] && [ -x .venv/bin/cyclone ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  echo "setup-python: installing python3-venv" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# uv is pinned in the lock like the rest: pip (which every venv has) installs it from its
# own entry there, hashes checked. No-op when .venv already has that version.
.venv/bin/python -m pip install -q --require-hashes --no-deps -r <(awk '/^uv==/,!/\\$/' "$lock")
[ "${1:-}" != --uv-only ] || exit 0
rm -f "$stamp"  # from here .venv changes: an install that fails half-way is redone next time
uv_pip() { .venv/bin/uv pip "$1" --python .venv/bin/python "${@:2}"; }
# sync, not install: a package dropped from the lock leaves .venv too.
uv_pip sync -q --require-hashes "$lock"
# No build isolation: setuptools comes from the lock rather than a fresh unpinned download.
uv_pip install -q --no-deps --no-build-isolation -e .
# Catches a dependency added to (or raised in) pyproject.toml but not yet in the lock.
if ! problems=$(uv_pip check 2>&1); then
  echo "$problems" >&2
  echo "setup-python: $lock does not satisfy pyproject.toml: run 'make lock'" >&2
  exit 1
fi
echo "$want" >"$stamp"

#!/usr/bin/env bash
# Installs what checks deploy/compose.yaml (tests/deploy): Docker Compose v5, built with Go
# from the Go module proxy into .cache/compose/bin/docker-compose (a long compile, once).
# The test runs it as `docker-compose config -q` (the plugin's binary works standalone
# too), which needs no daemon and pulls nothing.
# Idempotent and instant when done: nothing is built while the binary is there and the
# stamp .cache/compose/version names the version wanted. Needs Go (/usr/local/go here).
set -euo pipefail

version=v5.6.0  # the newest Go 1.26 builds (later ones ask for a newer Go)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/compose"
stamp="$cache/version"
binary="$cache/bin/docker-compose"

if [ -x "$binary" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    exit 0
fi

go="$(command -v go || true)"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go
fi
if [ -z "$go" ]; then
    echo "setup-deploy-compose: Go is not installed: Docker Compose $version is built with" \
         "Go; install Go from go.dev, or the compose test will skip (and fail" \
         "under CI)" >&2
    exit 1
fi

echo "setup-deploy-compose: building Docker Compose $version with $("$go" version) into" \
     "$cache/bin (several minutes, once)" >&2
mkdir -p "$cache"
rm -rf "$cache/bin.new"
# Not `go install MODULE@VERSION`: Compose's go.mod has exclude directives, which Go honours
# only in the main module. So the module is fetched from the proxy (hash-checked against
# go.sum's database) and built as the main module, the way its Makefile builds it.
module=github.com/docker/compose/v5
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
source_dir="$(cd "$work" && "$go" mod download -json "$module@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$source_dir" ] || { echo "setup-deploy-compose: cannot fetch $module@$version" >&2; exit 1; }
cp -r "$source_dir" "$work/compose"
chmod -R u+w "$work/compose"  # the module cache is read-only
(cd "$work/compose" && GOFLAGS=-buildvcs=false "$go" build -trimpath \
    -ldflags "-w -X $module/internal.Version=$version" \
    -o "$cache/bin.new/docker-compose" ./cmd)
rm -rf "$cache/bin"
mv "$cache/bin.new" "$cache/bin"
echo "$version" >"$stamp"
echo "setup-deploy-compose: Docker Compose $version installed: $binary" >&2

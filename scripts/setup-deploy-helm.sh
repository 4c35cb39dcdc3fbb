#!/usr/bin/env bash
# Installs what the Helm chart's tests (tests/deploy) need: Helm 4, built by `go install`
# from the Go module proxy into .cache/helm/bin (a long compile, once). The tests render
# deploy/helm/cyclone with `helm lint` and `helm template`; no cluster is needed.
# Idempotent and instant when done: nothing runs while the binary is there and the stamp
# .cache/helm/version names the version wanted. Needs Go (/usr/local/go on this machine kind).
set -euo pipefail

version=v4.3.2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/helm"
stamp="$cache/version"

if [ -x "$cache/bin/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    exit 0
fi

go="$(command -v go || true)"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go  # where Go's own tarball puts it, often not on a script's PATH
fi
if [ -z "$go" ]; then
    echo "setup-deploy-helm: Go is not installed: Helm $version is built with \`go install\`;" \
         "install Go from go.dev, or the chart's tests will skip (and fail under CI)" >&2
    exit 1
fi

echo "setup-deploy-helm: building Helm $version with $("$go" version) into $cache/bin" \
     "(several minutes, once)" >&2
mkdir -p "$cache"
# Into a fresh dir, then swap: an interrupted build never leaves a binary the stamp vouches for.
rm -rf "$cache/bin.new"
GOBIN="$cache/bin.new" GOFLAGS=-buildvcs=false "$go" install "helm.sh/helm/v4/cmd/helm@$version"
rm -rf "$cache/bin"
mv "$cache/bin.new" "$cache/bin"
echo "$version" >"$stamp"
echo "setup-deploy-helm: Helm $version installed: $cache/bin/helm" >&2

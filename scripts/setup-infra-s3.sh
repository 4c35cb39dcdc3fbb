#!/usr/bin/env bash
# Installs the S3-compatible server the S3 artifact store's tests run against: versitygw
# (Apache-2.0, an S3 gateway over a POSIX directory), built by `go install` from the Go
# module proxy into .cache/versitygw/bin. The tests start it themselves (tests/infra/s3.py).
# Idempotent and instant when done: nothing runs while the binary is there and the stamp
# .cache/versitygw/version names the version wanted. Needs Go (this machine kind ships
# it in /usr/local/go; Debian's golang-go is older than versitygw's go.mod asks for).
set -euo pipefail

version=v1.8.0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/versitygw"
stamp="$cache/version"

if [ -x "$cache/bin/versitygw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    exit 0
fi

go="$(command -v go || true)"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go  # where Go's own tarball puts it, often not on a script's PATH
fi
if [ -z "$go" ]; then
    echo "setup-infra-s3: Go is not installed: versitygw $version is built with \`go install\`." >&2
    echo "setup-infra-s3: install Go from go.dev (a recent release; Debian's is too old)," >&2
    echo "setup-infra-s3: or the S3 artifact store's tests will skip (and fail under CI)." >&2
    exit 1
fi

echo "setup-infra-s3: building versitygw $version with $("$go" version) into $cache/bin" >&2
mkdir -p "$cache"
# Into a fresh dir, then swap: an interrupted build never leaves a binary the stamp vouches for.
rm -rf "$cache/bin.new"
if ! GOBIN="$cache/bin.new" GOFLAGS=-buildvcs=false \
        "$go" install "github.com/versity/versitygw/cmd/versitygw@$version"; then
    echo "setup-infra-s3: \`go install\` of versitygw $version failed (see above; an old Go" \
         "says which version go.mod needs)" >&2
    exit 1
fi
rm -rf "$cache/bin"
mv "$cache/bin.new" "$cache/bin"
echo "$version" >"$stamp"
echo "setup-infra-s3: versitygw $version installed: $cache/bin/versitygw" >&2

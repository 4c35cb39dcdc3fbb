#!/usr/bin/env bash
# Builds the web UI (services/api/web, Vue + TypeScript + Vite) into
# services/api/web/dist, which the api service serves at / and the package ships.
# Idempotent and quick when up to date: `npm ci` only when node_modules is missing or
# older than package-lock.json; `npm run build` (vue-tsc --noEmit, then vite build) only
# when a source is newer than dist/index.html.
set -euo pipefail
cd "$(dirname "$0")/../services/api/web"

fail() { echo "build-ui: $*" >&2; exit 1; }
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 \
    || fail "'$tool' not found: the web UI needs Node.js 20.19 or later with npm (e.g. apt-get install nodejs npm, or nodejs.org)"
done
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || fail "Node.js $(node --version) is too old: the web UI needs 20.19 or later"

# npm writes node_modules/.package-lock.json on every install: its age is the install's.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "build-ui: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi

stale() {
  [ -f dist/index.html ] || return 0
  [ -n "$(find src index.html package.json package-lock.json vite.config.ts tsconfig.json \
            -newer dist/index.html -print -quit)" ]
}
if stale; then
  echo "build-ui: npm run build" >&2
  npm run --silent build
  touch dist/index.html
fi

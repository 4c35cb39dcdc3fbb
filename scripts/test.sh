#!/usr/bin/env bash
# `make test` after the setup: the suite, while the deployment tools build beside it.
#
# The tools only tests/deploy needs (Helm 4 and Docker Compose, compiled with `go install`,
# and the service image's debootstrapped base and wheels: scripts/setup-deploy-*.sh) take
# 15 to 20 minutes on a machine that has never built them, and nothing when they are
# there. So they build in the background, niced, while the rest of the suite runs, and
# tests/deploy runs last, once they are done. Their output is .cache/setup-deploy.log.
# Arguments go to both pytest runs (e.g. -x, -k); the exit code is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
log=.cache/setup-deploy.log

(
    for script in scripts/setup-deploy-*.sh; do
        nice -n 10 bash "$script" || exit 1
    done
) >"$log" 2>&1 &
building=$!

# Two workers: most of the suite waits on Docker, subprocesses and sockets, so a second
# worker uses the second core (tests/conftest.py says how the tests are shared out).
.venv/bin/python -m pytest -q -ra -n 2 --dist loadscope --ignore=tests/deploy "$@"
suite=$?

if ! wait "$building"; then
    echo "scripts/setup-deploy-*.sh failed (the end of $log):" >&2
    tail -n 40 "$log" >&2
    exit 1
fi
.venv/bin/python -m pytest -q -ra tests/deploy "$@"
deploy=$?

[ "$suite" -ne 0 ] && exit "$suite"
exit "$deploy"

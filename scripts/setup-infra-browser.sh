#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/e2e/test_browser.py) and the UI
# benchmark (bench/ui.py), which drive it through Playwright with
# executable_path=/usr/bin/chromium: no browser is downloaded (`playwright install` is never
# run; the Python package brings only its driver).
# Idempotent and quick when already there: apt-get runs only when /usr/bin/chromium is
# missing. `make setup-infra` (so `make test`) runs it with the other setup-infra-*.sh.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
$SUDO apt-get update -qq
# fonts-liberation: metric-compatible Arial/Times/Courier, so pages (and screenshots) lay
# out as on a desktop rather than in whatever fallback font is there.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null

test -x /usr/bin/chromium
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"

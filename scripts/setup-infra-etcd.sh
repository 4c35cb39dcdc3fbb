#!/usr/bin/env bash
# Installs etcd (server + etcdctl) for the etcd coordination adapter's tests.
# Idempotent and quick when already there: apt-get runs only when `etcd` is missing.
# Debian's etcd-server would start a system service through systemd/invoke-rc.d;
# policy-rc.d forbids that for the duration of the install (and there is no systemd here).
# The tests start their own etcd (tests/infra/etcd.py).
set -euo pipefail

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Refuse service starts during the install, restoring any policy-rc.d afterwards.
POLICY=/usr/sbin/policy-rc.d
BACKUP=""
if [ -e "$POLICY" ]; then
    BACKUP="$(mktemp)"
    $SUDO cp -p "$POLICY" "$BACKUP"
fi
restore() {
    if [ -n "$BACKUP" ]; then
        $SUDO mv "$BACKUP" "$POLICY"
    else
        $SUDO rm -f "$POLICY"
    fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
$SUDO chmod +x "$POLICY"

export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null

command -v etcd >/dev/null && command -v etcdctl >/dev/null
echo "etcd installed: $(etcd --version | head -n 1)"

#!/usr/bin/env bash
# Installs a container registry (Debian's docker-registry, Distribution 2.8) and htpasswd
# (apache2-utils, for its bcrypt users) for the image build/push/promote tests.
# Idempotent and quick when already there: apt-get runs only when a binary is missing.
# The package would start its own registry service on :5000; policy-rc.d forbids that
# for the duration of the install (and there is no systemd here). Nothing relies on that
# service: the tests start their own registries on free ports of 127.0.0.1, with storage
# under their tmp directory (tests/registry_support.py).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
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

    echo "setup-infra-registry: installing docker-registry apache2-utils" >&2
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends docker-registry apache2-utils >/dev/null
    command -v docker-registry >/dev/null && command -v htpasswd >/dev/null
fi


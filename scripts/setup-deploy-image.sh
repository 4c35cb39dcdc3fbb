#!/usr/bin/env bash
# Prepares what the service image's test (tests/deploy/test_containers.py) builds the image
# from, where nothing can be pulled: the debootstrapped base image and the wheels of
# deploy/requirements.lock (scripts/build-image.sh --deps-only; cached in .cache/, quick
# when done). The test builds the image itself, from the tree as it is then.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/build-image.sh" --deps-only

# The two commands: `make up` (set up, then run Cyclone on its embedded defaults)
# and `make test` (set up, then run the whole test suite). Both are idempotent.
VENV := .venv/bin

.PHONY: up test setup ui lock setup-docker setup-infra setup-deploy lint fuzz bench bench-cluster clean

setup:
	@bash scripts/setup-python.sh

# The web UI (services/api/web) built into services/api/web/dist: npm ci when the lock
# changed, a build when a source did; nothing when up to date. Needs Node.js 20.19+ and npm.
ui:
	@bash scripts/build-ui.sh

# Regenerates requirements.lock from pyproject.toml (runtime deps and the dev extra), and
# deploy/requirements.lock (what deploy/Dockerfile installs) from it, for
# CI's Python (3.11, Linux x86_64), keeping every pin that still fits: see README,
# "Upgrading dependencies" (LOCK_ARGS=-U upgrades all, LOCK_ARGS='-P NAME' one package).
lock:
	@bash scripts/setup-python.sh --uv-only
	$(VENV)/uv pip compile -q pyproject.toml --extra dev --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command 'make lock' -o requirements.lock $(LOCK_ARGS)
	@# the service image's share of it: the runtime dependencies, at the same pins
	$(VENV)/uv pip compile -q pyproject.toml deploy/image-build.in --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command 'make lock' -c requirements.lock -o deploy/requirements.lock

setup-docker:
	@bash scripts/setup-docker.sh
	@bash scripts/build-test-images.sh

# Servers the distributed adapters' tests talk to (etcd, Kafka, a MongoDB stand-in, the S3
# gateway versitygw, built with Go), and
# the browser the UI's tests drive (Debian's chromium): each scripts/setup-infra-*.sh
# installs its files, idempotently.
setup-infra:
	@for script in scripts/setup-infra-*.sh; do if [ -e "$$script" ]; then bash "$$script" || exit 1; fi; done

up: setup setup-docker ui
	$(VENV)/cyclone up

# tests/deploy's tools (Helm, Compose, the image's base: scripts/setup-deploy-*.sh) build
# in the background while the rest of the suite runs; tests/deploy runs last (scripts/test.sh).
test: setup setup-docker setup-infra ui
	@bash scripts/test.sh

# What tests/deploy needs, in the foreground (make test builds it beside the suite).
setup-deploy:
	@for script in scripts/setup-deploy-*.sh; do bash "$$script" || exit 1; done

# The fuzzers of tests/fuzz with the long budget (Hypothesis profile "fuzz": 50 times the
# suite's examples; findings are kept in .hypothesis/ and replayed first next time).
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(VENV)/python -m pytest -q -ra tests/fuzz $(FUZZ_ARGS)

lint: setup
	$(VENV)/ruff check shared services cyclone tests bench
	$(VENV)/mypy

bench: setup setup-docker ui
	$(VENV)/python bench/overhead.py
	$(VENV)/python bench/logs.py
	$(VENV)/python bench/store.py
	$(VENV)/python bench/webhooks.py
	$(VENV)/python bench/latency.py
	$(VENV)/python bench/scale.py
	$(VENV)/python bench/delivery.py
	$(VENV)/python bench/artifacts.py
	@bash scripts/setup-infra-browser.sh
	$(VENV)/python bench/ui.py

bench-cluster: setup setup-docker setup-infra
	$(VENV)/python bench/cluster.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache

# Two entry points for a newcomer: `make up` (deploy the dev stack) and `make test`.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv test lint relock client scan check-python

# uv installs the locks into the virtualenvs (.venv, scan/venv, .build/moto-venv): the same pinned versions as pip,
# in a fifth of the time. It is pinned in scripts/uv-requirements.txt and lives in its own virtualenv. The
# virtualenvs themselves are made by `python -m venv`, so each has its pip. Bytecode is compiled on first import.
UV_STAMP := .build/uv-venv/.installed
UV := .build/uv-venv/bin/uv
$(UV_STAMP): scripts/uv-requirements.txt
	@PY="$(PY)" bash scripts/dev.sh python
	$(PY) -m venv .build/uv-venv
	.build/uv-venv/bin/pip install --quiet -r scripts/uv-requirements.txt
	touch $(UV_STAMP)

$(STAMP): requirements.txt requirements-dev.txt docker/requirements.lock pyproject.toml $(UV_STAMP)
	@PY="$(PY)" bash scripts/dev.sh python
	$(PY) -m venv $(VENV)
	$(UV) pip install --quiet --python $(VENV)/bin/python -r requirements-dev.txt
	# The project itself, editable: `components` and `tools` import from any directory (the dynamic provider's too).
	$(UV) pip install --quiet --python $(VENV)/bin/python --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The README's test command, and all that CI runs: the Python check (first: before any virtualenv is made), lint
# and types, the suite (in parallel: pytest-xdist, see pyproject's addopts). The suite holds the security scan:
# tests/test_matrix.py gives checkov what `make scan` scans (scripts/scan.py's targets, with its rule: any failed
# check fails) in the matrix's one checkov run, so the stacks are scanned once, beside the other tests, not after them.
# checkov's virtualenv is made before the suite; LSDB_REQUIRE_CHECKOV makes its absence a failure, not a skip.
test: check-python lint moto-venv scan-venv
	LSDB_REQUIRE_CHECKOV=1 $(VENV)/bin/python -m pytest

# The Python minor the locks are for, with `make up`'s message (scripts/dev.sh python).
check-python:
	@PY="$(PY)" bash scripts/dev.sh python

# moto's S3 server for the object-store tests, in its own virtualenv: installed into .venv it would upgrade
# botocore past what aiobotocore (s3fs) accepts. The tests create it the same way when it is missing.
MOTO_STAMP := .build/moto-venv/.installed
$(MOTO_STAMP): tests/support/moto-requirements.txt $(UV_STAMP)
	$(PY) -m venv .build/moto-venv
	$(UV) pip install --quiet --python .build/moto-venv/bin/python --no-deps -r tests/support/moto-requirements.txt
	cp tests/support/moto-requirements.txt $(MOTO_STAMP)

.PHONY: moto-venv
moto-venv: $(MOTO_STAMP)

# The whole lock bump, one command: re-resolve docker/requirements.lock, requirements.txt and
# requirements-dev.txt in one pass from the .in files, then the policy pack's pins that follow them.
relock: $(STAMP)
	$(VENV)/bin/python -m tools.relock
	$(VENV)/bin/python scripts/dev_policy_lock.py

# The analysis environment alone (what a laptop or notebook needs to talk to the cluster): exactly the
# image's lock, no Pulumi or test tools. Activate with `source .venv-client/bin/activate`.
CLIENT_VENV := .venv-client
client: $(CLIENT_VENV)/.installed
$(CLIENT_VENV)/.installed: docker/requirements.lock
	$(PY) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet --upgrade pip
	$(CLIENT_VENV)/bin/pip install --quiet -r docker/requirements.lock
	touch $@

# --- dev environment (scripts/dev.sh): a kind cluster, a local registry and the dev stack ---------
# `make up` checks prerequisites before it changes anything, then creates the virtualenv, the local
# registry and kind cluster (when missing), seeds the sample catalog and runs `pulumi up --stack dev`
# against a file backend in .pulumi-state (never your global `pulumi login`). `make down` removes it all.
.PHONY: up down check-prereqs dev-cluster policy-venv

check-prereqs:
	@PY="$(PY)" bash scripts/dev.sh check

up:
	@PY="$(PY)" bash scripts/dev.sh check
	@$(MAKE) --no-print-directory venv
	@DEV_PREREQS_CHECKED=1 bash scripts/dev.sh up

down:
	@bash scripts/dev.sh down

# Registry, kind cluster and sample catalog only (no Pulumi): what the integration tests deploy onto.
dev-cluster:
	@PY="$(PY)" bash scripts/dev.sh cluster

# The policy pack's own virtualenv, for `pulumi preview --policy-pack policy`.
POLICY_STAMP := policy/venv/.installed
$(POLICY_STAMP): policy/requirements.txt
	$(PY) -m venv policy/venv
	policy/venv/bin/pip install --quiet --upgrade pip
	policy/venv/bin/pip install --quiet -r policy/requirements.txt
	touch $(POLICY_STAMP)

policy-venv: $(POLICY_STAMP)

# `make scan`: checkov (its own pinned virtualenv, scan/venv) on every stack's rendered objects, the Deployments
# and Service the operator builds from them, and docker/. Fails on any failed check (scripts/scan.py). Alone, with
# the counts per stack; `make test` runs the same scan inside the suite (tests/test_matrix.py).
SCAN_STAMP := scan/venv/.installed
$(SCAN_STAMP): scan/requirements.txt $(UV_STAMP)
	$(PY) -m venv scan/venv
	$(UV) pip install --quiet --python scan/venv/bin/python --no-deps -r scan/requirements.txt
	$(UV) pip check --python scan/venv/bin/python
	touch $(SCAN_STAMP)

.PHONY: scan-venv
scan-venv: $(SCAN_STAMP)

scan: $(STAMP) $(SCAN_STAMP)
	$(VENV)/bin/python scripts/scan.py --checkov scan/venv/bin/checkov

# `make mutate` (not part of `make test`): mutmut on the modules that decide correctness and safety, against their
# fast unit tests ([tool.mutmut] in pyproject.toml), one module at a time, then the score per module
# (docs/mutation.md). MUTATE_JOBS=2 on a machine of your own; MUTATE_MODULES="components/security.py" for one.
MUTATE_JOBS ?= 1
MUTATE_MODULES ?=
.PHONY: mutate
mutate: $(STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python scripts/mutate.py --jobs $(MUTATE_JOBS) $(foreach m,$(MUTATE_MODULES),--module $(m))

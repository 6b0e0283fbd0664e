# healthpsi — two commands: `make demo` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
UV      := $(VENV)/bin/uv
UV_VERSION := 0.13.10
STAMP   := $(VENV)/.installed
PRESET  ?= city-20k
SEED    ?= 7
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test test-fast fuzz proto assets bench lint typecheck lock clean venv

venv: $(STAMP)

# The environment comes from uv.lock only (exact versions and hashes); `make lock` refreshes it on purpose.
$(STAMP): uv.lock pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(UV) sync --quiet --frozen --all-extras
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/healthpsi run --preset $(PRESET) --seed $(SEED) --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m 'not slow' -x -q

# The decoders' property tests with many more examples than `make test` gives them.
FUZZ_EXAMPLES ?= 3000
fuzz: $(STAMP)
	HEALTHPSI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/unit/test_fuzz_decoders.py

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

# Browser bundles (service/static/dist, committed) from web/ with the npm lockfile's exact versions.
assets:
	cd web && npm ci --no-audit --no-fund --ignore-scripts && node build.mjs

bench: $(STAMP)
	$(VENV)/bin/healthpsi bench all --out runs/bench

lock:
	uv lock --upgrade || $(UV) lock --upgrade

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache

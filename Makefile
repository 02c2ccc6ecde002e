# The project's named entry points. Each is a few lines; the real work lives in the package.
PY ?= python3.11
VENV := .venv
BUILD_VENV := .venv-build
MODELS := build/models

.PHONY: run test lint bench models clean sdk-ts

run: $(VENV)/.installed $(MODELS)/.built
	$(VENV)/bin/modelgate serve --model-repository $(MODELS)

# The suite runs in TEST_WORKERS pytest-xdist processes, whole files each (fixtures scoped to
# a module or package start once per worker); 3 on 2 cores, as a worker that waits on its
# real servers leaves a core to another (docs/benchmarks.md has the timings). Bytecode is written even where the shell says not to: each
# worker would otherwise compile (and assertion-rewrite) every module again.
TEST_WORKERS ?= 3
test: $(VENV)/.installed $(MODELS)/.built
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests clients/python/tests

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench clients
	$(VENV)/bin/ruff format --check src tests bench clients
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy clients/python/src/modelgate_client
	$(VENV)/bin/lint-imports

# The TypeScript SDK alone (make test runs it too, via tests/sdk/test_typescript_sdk.py).
sdk-ts: $(VENV)/.installed $(MODELS)/.built
	$(VENV)/bin/python -m pytest -q tests/sdk/test_typescript_sdk.py

bench: $(VENV)/.installed $(MODELS)/.built
	$(VENV)/bin/python -m bench --models $(MODELS)

models: $(MODELS)/.built

# Serving environment: pinned runtime and test dependencies, no torch.
$(VENV)/.installed: requirements.lock pyproject.toml clients/python/pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e . -e clients/python
	touch $@

# Build-only environment for the demo models (torch CPU, sentence-transformers, skl2onnx).
$(BUILD_VENV)/.installed: requirements-build.lock pyproject.toml
	test -x $(BUILD_VENV)/bin/python || $(PY) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-build.lock
	$(BUILD_VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Demo models are rebuilt only when their recipe changes; a new data directory reuses them.
$(MODELS)/.built: $(BUILD_VENV)/.installed $(wildcard src/modelgate/demo/*.py)
	$(BUILD_VENV)/bin/python -m modelgate.demo build --out $(MODELS)
	touch $@

clean:
	rm -rf $(VENV) $(BUILD_VENV) build .pytest_cache .mypy_cache .ruff_cache

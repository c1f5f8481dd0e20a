# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench-startup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/forewarn demo

test: $(STAMP)
	$(BIN)/pytest -q -n 4 --dist loadgroup

test-all: $(STAMP)
	$(BIN)/pytest -q -m ''

bench-startup: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) outbox simulation .pytest_cache

# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench-startup clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/forewarn demo

test: $(STAMP) browser
	$(BIN)/pytest -q -n 4 --dist loadgroup

# The web page tests drive Debian's chromium headless; installed once if missing (needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	    apt="$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get"; \
	    $$apt install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	    { $$apt update -qq && $$apt install -y -qq chromium chromium-driver >/dev/null; }; }

test-all: $(STAMP)
	$(BIN)/pytest -q -m ''

bench-startup: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) outbox simulation .pytest_cache

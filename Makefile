# One toolchain, wired once: the README and .ci/run call these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install typecheck-tree lint browser test test-unit demo bench clean

# quickjs-ng replaced the `quickjs` package and installs the same module (quickjs/__init__.py),
# but an old `_quickjs.cpython-*.so` would still be imported before its `_quickjs.abi3.so`: a
# venv that has `quickjs` loses both packages first, and quickjs-ng is installed afresh.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if $(BIN)/python -m pip show --quiet quickjs >/dev/null 2>&1; then \
	  $(BIN)/python -m pip uninstall --quiet --yes quickjs quickjs-ng; fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The installed layout (eventray.pipeline, ...) as links, for mypy (see pyproject.toml).
typecheck-tree:
	mkdir -p .typecheck/eventray
	for d in actors pipeline config cluster; do ln -sfn ../../$$d .typecheck/eventray/$$d; done
	ln -sfn ../../tests/kit .typecheck/eventray/testing

lint: install typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The console's browser tests drive Debian's Chromium (playwright never downloads a browser
# here): installed when missing and we are root; otherwise those tests skip, naming the command.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no /usr/bin/chromium: the console's browser tests skip (run: sudo apt-get install -y chromium)"; fi; \
	fi

test: lint browser
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

demo: install
	$(BIN)/eventray demo

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .eventray .pytest_cache .mypy_cache .ruff_cache .typecheck

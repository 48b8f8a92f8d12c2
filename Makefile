# The front door: `make demo` runs the offline demo, `make test` runs the tests.
# Both install what they need first (idempotent; fast when already installed).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install install-packages install-browser demo test lint

install:
	@# Skipped when this Python already runs this checkout and pyproject.toml has not changed
	@# since the last install (.make/installed); otherwise install (about 40 s when cached).
	@$(PYTHON) -c "import sys, t2i_adapter; sys.exit(not t2i_adapter.__file__.startswith('$(CURDIR)/src/'))" 2>/dev/null \
		&& test .make/installed -nt pyproject.toml \
		|| $(MAKE) --no-print-directory install-packages

install-packages:
	@# torch first: the CPU build on machines without CUDA. A plain `torch` requirement would
	@# otherwise pull several GB of CUDA packages. A torch you installed yourself is kept.
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -q -e ".[test]"
	@mkdir -p .make && touch .make/installed

install-browser:
	@# Debian's Chromium for the browser tests; never a browser download by a test tool.
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

demo: install
	t2i-adapter demo --out outputs/demo

test: install install-browser
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m pytest -q -n 2 --dist loadfile  # a file per worker: the browser tests share one page

lint: install
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks

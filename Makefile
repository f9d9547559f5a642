# The two README commands: `make demo` (main job) and `make test` (test suite).
# Each creates .venv when missing; torch==2.13.0 is installed first because a plain `torch`
# requirement would pull a multi-GB CUDA build on machines without it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.glotok-installed

# The browser test of the Space (tests/test_space.py) drives Debian's chromium through its chromedriver.
APT_BROWSER := chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint clean-venv browser

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/glotok generate --class-labels 0 1 2 3 4 5 6 7 8 9 --num-images-per-label 4 --seed 0 --output outputs/demo_grid.png --overwrite

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_BROWSER); fi

clean-venv:
	rm -rf $(VENV)

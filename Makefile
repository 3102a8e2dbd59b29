# The two commands of the README, each installing what it needs first (idempotent).
PYTHON ?= python3
DATA_DIR ?= $(if $(wildcard ../shared/datasets/MNIST),../shared/datasets,)
STAMP := .install-stamp

.PHONY: install smoke test lint bench browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0+cpu
	$(PYTHON) -m pip install -q -c constraints.txt -e ".[test,avalanche]"
	touch $(STAMP)

# The report test opens the leaderboard in a real headless browser: Debian's chromium, driven by playwright.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

install: $(STAMP)

smoke: $(STAMP)
	harness run --grid smoke $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

test: $(STAMP) browser
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	ruff check . && ruff format --check .

bench: $(STAMP)
	$(PYTHON) bench/throughput.py $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

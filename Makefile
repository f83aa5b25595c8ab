# Two commands do everything on a fresh machine (see README):
#   make demo   - install what the demo needs, then train -> forget -> evaluate -> report on a small built-in default
#   make test   - install everything (also the test tools, Ray and Chromium), then run the test suite
#   make lint   - ruff (installed with the test tools) over src, tests and benchmarks
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-core
STAMP := $(VENV)/.installed
comma := ,
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The demo reads Fashion-MNIST only; the tests also read the UCI Letter table (opencv-doc) and open the
# report in a headless browser (chromium, by far the largest download: not installed for the demo).
DEMO_PACKAGES := dataset-fashion-mnist
TEST_PACKAGES := $(DEMO_PACKAGES) opencv-doc chromium

# $(call phase,NAME,COMMANDS): announce a phase, run it, say how long it took
phase = @echo "==> $(1)"; start=$$(date +%s); $(2) && echo "    $(1): done in $$(( $$(date +%s) - start )) s"
# $(call debian,PACKAGES): apt-get install the ones that are missing
debian = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "    installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else echo "    already installed: $(1)"; fi

.PHONY: install install-demo system-packages demo-packages demo test lint bench clean

demo-packages:
	$(call phase,Debian packages for the demo,$(call debian,$(DEMO_PACKAGES)))

system-packages:
	$(call phase,Debian packages for the tests,$(call debian,$(TEST_PACKAGES)))

$(DEMO_STAMP): pyproject.toml constraints.txt
	$(call phase,Python environment $(VENV) with the runtime dependencies (torch and others),$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q -c constraints.txt -e . && touch $(DEMO_STAMP))

$(STAMP): $(DEMO_STAMP)
	$(call phase,test and optional Python dependencies (pytest, ruff, pyarrow and Ray),$(BIN)/pip install -q -c constraints.txt -e '.[dev$(comma)parquet$(comma)ray]' && touch $(STAMP))

install-demo: demo-packages $(DEMO_STAMP)

install: system-packages $(STAMP)

demo: install-demo
	$(call phase,obliviate demo,$(BIN)/obliviate demo)

test: install
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs results reports .pytest_cache

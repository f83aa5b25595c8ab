# Two commands do everything on a fresh machine (see README):
#   make demo   - install everything, then train -> forget -> evaluate -> report on a small built-in default
#   make test   - install everything, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := dataset-fashion-mnist opencv-doc chromium

.PHONY: install system-packages demo test bench clean

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,parquet,ray]'
	touch $(STAMP)

install: system-packages $(STAMP)

demo: install
	$(BIN)/obliviate demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs results reports .pytest_cache

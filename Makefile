# smartswitch: developer entry points.
#
#   make run                      a node on SIP 0.0.0.0:5060, web 127.0.0.1:8080,
#                                 SQLite in ./smartswitch-data
#   make run ARGS="--config x.toml"
#                                 with a config file: its data_dir, sip_listen and
#                                 http_listen then apply (the defaults above are
#                                 the node's own and are not passed as flags)
#   make run SIP_LISTEN=127.0.0.1:5062
#                                 a flag always wins over the config file
#   make test                     everything CI checks (.ci/run runs this)
#   make lint                     ruff check, ruff format --check, mypy, lint-imports
#   make bench [BENCH_ARGS=...]   clean call rates and CPU per call against Kamailio
#                                 (bench/speed.py; bench/README.md)
#   make dist                     build the wheel into dist/ (pip install dist/*.whl), its
#                                 SIP core and B2BUA engine compiled by mypyc (setup.py;
#                                 pure Python where no C compiler is, or with
#                                 SMARTSWITCH_MYPYC=0; `make venv` installs editable, pure)
#
# The virtualenv is made on first use and `pip install -e '.[dev]'` runs again
# whenever pyproject.toml is newer than the last install.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

ARGS ?=
BENCH_ARGS ?=

DATA_DIR ?= ./smartswitch-data
SIP_LISTEN ?= 0.0.0.0:5060
HTTP_LISTEN ?= 127.0.0.1:8080

# Flags from the variables above, except those a --config in ARGS should
# decide: a flag set on the command line (make run SIP_LISTEN=...) is kept.
flag = $(if $(or $(filter command line,$(origin $(1))),$(if $(findstring --config,$(ARGS)),,yes)),$(2) $($(1)))
RUN_FLAGS = $(call flag,DATA_DIR,--data-dir) $(call flag,SIP_LISTEN,--sip-listen) \
	$(call flag,HTTP_LISTEN,--http-listen)

.PHONY: help venv run test lint system-deps bench dist

help:
	@sed -n '/^#   make/,/^#$$/p' $(MAKEFILE_LIST) | sed 's/^# \{0,1\}//'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

system-deps:
	scripts/install-system-deps.sh

run: $(STAMP)
	exec $(BIN)/smartswitch run $(RUN_FLAGS) $(ARGS)

# Lint in the order a failure is cheapest to read; tests/e2e and bench are
# checked by a second mypy run (the configured one covers src/ only).
define lint-steps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	MYPYPATH=tests $(BIN)/mypy --strict tests/conftest.py tests/netlab.py tests/test_compiled.py tests/e2e tests/cluster tests/cli tests/runtime tests/ha \
		tests/web tests/b2bua tests/transport tests/media tests/capture tests/billing tests/store \
		tests/routing tests/registrar tests/admin tests/sip
	MYPYPATH=tests $(BIN)/mypy --strict bench
endef

lint: $(STAMP)
	$(lint-steps)

# Sequential on purpose (also under make -j): system packages, lint, tests.
test: $(STAMP)
	scripts/install-system-deps.sh
	$(lint-steps)
	$(BIN)/pytest

dist: $(STAMP)
	rm -rf dist build
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/*.whl

# Kamailio is the benchmark's C reference only: not a test dependency.
bench: $(STAMP) system-deps
	@PATH="$$PATH:/usr/sbin" command -v kamailio >/dev/null || \
		apt-get install -y --no-install-recommends kamailio
	$(BIN)/python bench/speed.py $(BENCH_ARGS)

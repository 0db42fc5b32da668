# dvc-etl: the two commands are `make run` and `make test`; both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps run test test-all lint bench bench-5m deploy pg clean

# Tests start an ephemeral Prefect server: no analytics, and time for it to start on a busy machine.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## run: the main job on the embedded default (simulator -> checks -> DuckDB -> reports + workbook)
run: install
	$(BIN)/dvc-etl demo

## system-deps: the system packages the tests need and pip cannot install: LibreOffice (renders the
## workbook as an official would open it) and the en_US / vi_VN locales it is rendered under.
## Installed with apt-get when missing (root, as on these machines); anything else: install them by hand.
SYSTEM_STAMP := $(VENV)/.system-deps
$(SYSTEM_STAMP):
	@command -v soffice >/dev/null 2>&1 || { \
	  echo "installing LibreOffice (libreoffice-calc) with apt-get..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    libreoffice-calc >/dev/null; }
	@command -v soffice >/dev/null 2>&1 || { echo "LibreOffice (soffice) is missing and could not be installed" >&2; exit 1; }
	@locale -a 2>/dev/null | grep -qi '^en_US.utf8$$' && locale -a 2>/dev/null | grep -qi '^vi_VN' || { \
	  echo "generating the en_US.UTF-8 and vi_VN locales..."; \
	  command -v locale-gen >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq locales >/dev/null; }; \
	  sed -i -e 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' -e 's/^# *vi_VN UTF-8/vi_VN UTF-8/' /etc/locale.gen; \
	  locale-gen >/dev/null; }
	@mkdir -p $(VENV) && touch $(SYSTEM_STAMP)

system-deps: $(SYSTEM_STAMP)

## pg: start the machine's PostgreSQL if it is down (tests use it for real)
pg:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  command -v pg_ctlcluster >/dev/null && pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; \
	  for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }

## test: install and pass the test suite (DuckDB and the real PostgreSQL)
test: install system-deps pg
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" -q --durations=15

## test-all: also the heavier tests (crash points, hostile input at volume, Prefect server)
test-all: install system-deps pg
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf data reports .pytest_cache

## deploy: create the process work pool if missing and deploy every deployment of prefect.yaml
## to the server in PREFECT_API_URL (start one with `prefect server start`)
deploy: install
	@test -n "$$PREFECT_API_URL" || { echo "PREFECT_API_URL is not set (e.g. http://127.0.0.1:4200/api)"; exit 2; }
	$(BIN)/prefect work-pool inspect dvc-process >/dev/null 2>&1 || $(BIN)/prefect work-pool create dvc-process --type process
	$(BIN)/prefect --no-prompt deploy --all

## bench: province-scale benchmark (50k and 1M dossiers): raw fetch, pipeline into DuckDB and
## PostgreSQL, load limit, dlt peer, nightly incremental; tables printed and written to bench/out/
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench,dev]'
	@touch $(BENCH_STAMP)

bench: install pg $(BENCH_STAMP)
	$(BIN)/python -m bench.run --sizes 50000,1000000 $(BENCH_ARGS)

## bench-5m: the manual 5M-dossier run (long; the simulator holds the whole dataset and its pre-rendered
## pages in memory: more than the 24 GB of these machines, where it was OOM-killed at 23 GB)
bench-5m: install pg $(BENCH_STAMP)
	$(BIN)/python -m bench.run --sizes 5000000 $(BENCH_ARGS)

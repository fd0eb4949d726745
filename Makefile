# fleetsched: the two commands of the README, each setting up its own virtual environment.
#   make demo   runs the main job on the bundled default: compare the starter profiles on a
#               bundled trace and cluster (out/demo/: comparison.csv, plots, report.html, one run directory each)
#   make test   runs ruff, mypy --strict and the whole test suite with coverage

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "fleetsched needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv"; \
	  (apt-get update -qq && apt-get install -y -qq python3-venv) >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fleetsched compare --trace traces/samples/synth-2days.jsonl --cluster traces/samples/elastic-spot-cluster.toml \
	  --profiles default,binpack,cost-greedy --seeds 3 --out out/demo --force
	$(BIN)/fleetsched report out/demo --out out/demo/report.html

lint: $(STAMP)
	$(BIN)/ruff check scheduler policies simulator extender traces fleetsched tests benchmarks notebooks

typecheck: $(STAMP)
	$(BIN)/mypy --strict scheduler policies traces simulator extender fleetsched

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# The report's test (tests/test_report_chromium.py) opens the HTML report in Debian's headless
# chromium: install it when it is missing, as python3-venv above.
.PHONY: chromium
unit: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found; installing Debian's chromium"; \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null; }

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_plan.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

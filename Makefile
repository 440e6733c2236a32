# Everything a new user or CI needs: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: test test-loaded lint dist-check docs services promtool chromium wrk demo bench clean mutation mutation-sample

# The venv itself, with a current pip.
$(VENV)/.created:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

# What the demo runs, and nothing else: the library, the IdP's dependencies, fakeredis (the
# demo's last-resort Redis). No linters, no test or docs tools.
$(VENV)/.demo-installed: $(VENV)/.created setup.cfg pyproject.toml
	$(PIP) install --quiet -e '.[idp,hiredis]' 'fakeredis[lua]>=2.23'
	touch $@

# Development: every extra, the docs' toolchain and the pinned linters/packaging checkers.
$(VENV)/.installed: $(VENV)/.created setup.cfg pyproject.toml requirements/dev.txt
	$(PIP) install --quiet -e '.[idp,test,hiredis,prometheus,async,docs]' -r requirements/dev.txt
	touch $@

services: $(VENV)/.installed
	$(PY) scripts/ensure_services.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check flask_rbac_abac idp_app example_service tests bench scripts docs packaging
	$(VENV)/bin/ruff format --check flask_rbac_abac idp_app example_service tests bench scripts docs packaging
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Build both distributions (library, packaging/idp) from this tree into a temporary directory
# and check them: the library's sdist holds every file git tracks (its tests need them), each
# wheel holds exactly its one top-level package, and PyPI would render both.
dist-check: $(VENV)/.installed
	if [ -e .git ]; then $(VENV)/bin/check-manifest --quiet; fi
	@set -e; out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	$(PY) -m build --outdir "$$out" . > "$$out/build.log" 2>&1 || { cat "$$out/build.log"; exit 1; }; \
	$(PY) -m build --outdir "$$out" packaging/idp > "$$out/build-idp.log" 2>&1 || { cat "$$out/build-idp.log"; exit 1; }; \
	$(VENV)/bin/check-wheel-contents --toplevel flask_rbac_abac "$$out"/flask_rbac_abac-*.whl; \
	$(VENV)/bin/check-wheel-contents --toplevel idp_app "$$out"/flask_rbac_abac_idp-*.whl; \
	$(VENV)/bin/twine check --strict "$$out"/*.whl "$$out"/*.tar.gz

# The HTML documentation in docs/_build/html; any Sphinx warning fails the build.
docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

# promtool (Debian's `prometheus` package) checks and unit-tests deploy/prometheus/alerts.yml in
# tests/test_deploy.py; installed here when running as root, else that test says what is missing.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  else echo "promtool missing: install Debian's prometheus package (tests/test_deploy.py needs it)"; fi; }

# Debian's chromium and chromium-driver, for the admin console's browser test
# (tests/e2e/test_console_browser.py); installed here when running as root.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	  else echo "chromium missing: install Debian's chromium and chromium-driver (the console's browser test needs them)"; fi; }

# wrk (Debian's `wrk` package) loads the servers of `make bench`'s over-HTTP cases; installed here
# when running as root, else the benchmark says what is missing and skips those cases.
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; \
	  else echo "wrk missing: install Debian's wrk package (make bench's over-HTTP cases need it)"; fi; }

test: $(VENV)/.installed services promtool chromium lint dist-check docs
	CI=$${CI:-} $(PY) -m pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)
	$(MAKE) mutation-sample

# The whole suite three times in a row with one core busy (stress-ng, else a busy loop), to
# catch tests that flake under load; logs in .loaded-runs/. RUNS=6 for more.
test-loaded: $(VENV)/.installed services promtool chromium
	scripts/loaded_runs.sh $${RUNS:-3} -- $(PYTEST_ARGS)

# Mutation testing (mutmut, configured in setup.cfg's [mutmut]) of the modules that hold the
# promise, against the fast unit tests. `mutation` runs every mutant and prints the score (fails
# under 90 %); `mutation-sample` runs 40 chosen by a fixed seed and fails if one survives.
# Equivalent mutants, which no test can kill, are listed in tests/MUTANTS.md.
mutation: $(VENV)/.installed
	$(PY) scripts/mutation.py full

mutation-sample: $(VENV)/.installed
	$(PY) scripts/mutation.py sample --count 40 --seed 12

demo: $(VENV)/.demo-installed
	$(PY) scripts/demo.py

# The benchmarks' own tools (gunicorn, pycasbin, Flask-Principal, matplotlib, psutil), pinned in
# requirements/bench.txt: only `make bench` installs them.
$(VENV)/.bench-installed: $(VENV)/.installed requirements/bench.txt
	$(PIP) install --quiet -r requirements/bench.txt
	touch $@

# The main table (bench/run.py: ratios against baselines measured in the same run, goals with
# PASS/FAIL; writes bench/results.json, bench/results.png and, on a full run, BENCHMARKS.md),
# then the other benchmarks. BENCH_ARGS=--quick for fewer rounds; BENCH_STRICT=1 makes a failed
# goal fail the target.
bench: $(VENV)/.bench-installed services wrk
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) bench/warm.py
	$(PY) bench/simulate.py
	$(PY) bench/partial.py

clean:
	rm -rf $(VENV) mutants .loaded-runs .pytest_cache .mypy_cache .ruff_cache .coverage .demo build dist docs/_build

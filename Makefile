# Everything a new user or CI needs: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test lint services demo bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[idp,test,hiredis]'
	touch $@

services: $(VENV)/.installed
	$(PY) scripts/ensure_services.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check flask_rbac_abac idp_app example_service tests bench scripts
	$(VENV)/bin/ruff format --check flask_rbac_abac idp_app example_service tests bench scripts
	$(VENV)/bin/mypy

test: $(VENV)/.installed services lint
	CI=$${CI:-} $(PY) -m pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

bench: $(VENV)/.installed services
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .demo

# Two commands on a fresh machine: `make serve` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test serve test lint bench loadtest docker-test clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	bash scripts/install.sh $(VENV) test,load
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: install
	$(VENV)/bin/rrs serve --host $(HOST) --port $(PORT)

lint: install-test
	$(VENV)/bin/ruff check .

test: install-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/rrs bench embed

loadtest: install-test
	bash loadtest/run.sh

docker-test:
	bash docker/test.sh

clean:
	rm -rf $(VENV) var/

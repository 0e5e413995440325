# `make demo` and `make test` each create .venv when missing or stale (pyproject.toml newer).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/assim demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@for f in benchmarks/*.py; do echo "# $$f" >&2; $(BIN)/python -P $$f || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) assim-output .pytest_cache

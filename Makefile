# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= runs/demo

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Distil the bundled scikit-learn digits set with E2D and with a random real subset, evaluate both
# under the same student protocol, print the table and write preview.png for each run.
demo: install
	$(VENV)/bin/tinyset distill --config digits-demo --out $(DEMO_OUT)/e2d --overwrite
	@echo "preview: $(DEMO_OUT)/e2d/preview.png"

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

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

# Distil the bundled scikit-learn digits set with E2D (the digits-demo preset: small teacher and
# students), evaluate it beside a random real subset under the same protocol, print the table.
# The run prints its own wall time; this line adds the whole command's (Python start-up included).
demo: install
	@start=$$(date +%s); \
	$(VENV)/bin/tinyset distill --config digits-demo --out $(DEMO_OUT)/e2d --overwrite && \
	echo "demo wall time: $$(( $$(date +%s) - start ))s (preview: $(DEMO_OUT)/e2d/preview.png)"

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

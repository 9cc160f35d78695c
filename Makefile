# The whole set-up is these two targets: `make demo` and `make test`.
# Both install from requirements/lock.txt (every package at an exact version; docs/install.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed
# The installer's own version comes from the lock, so bootstrapping it is locked too.
UV_VERSION := $(shell sed -n 's/^uv==//p' $(LOCK))

.PHONY: demo test lint lock clean gpu-check gpu-wheels

$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)

# `uv pip sync` installs exactly the lock (no resolution, removes anything else), with bytecode
# compiled: where PYTHONDONTWRITEBYTECODE is set (CI) every process would otherwise recompile
# torch's modules on import, seconds per test subprocess. s2s itself
# is then installed editable without dependencies and without build isolation, so even the
# build backend is the locked one.
$(STAMP): $(LOCK) setup.cfg pyproject.toml | $(UV)
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m s2s.demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

# On a GPU machine with torch preinstalled and no network (docs/engine.md, "The GPU check"):
# `make gpu-wheels` beforehand where pip reaches the index, then there
# `make gpu-check OUT=gpu-report BUDGET=480`. Neither uses .venv.
OUT ?= gpu-report
BUDGET ?= 480
gpu-wheels:
	tools/gpu_check.sh fetch .whl

gpu-check:
	tools/gpu_check.sh run $(OUT) $(BUDGET) .whl

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Refresh the lock on purpose (new upstream releases, or a changed requirement in setup.cfg
# or requirements/extra.in); then run `make test` and commit the lock with what it changed.
lock: | $(UV)
	$(UV) pip compile setup.cfg --extra dev --extra onnx requirements/extra.in \
		--excludes requirements/exclude.txt --universal --python-version 3.10 --upgrade \
		--custom-compile-command "make lock" --quiet -o $(LOCK)

clean:
	rm -rf $(VENV) build *.egg-info

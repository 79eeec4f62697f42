# Set-up, demo and tests. `make demo` and `make test` install everything they need first.
VENV    ?= .venv
PYTHON  ?= python3
APT_PKGS = pkg-config libturbojpeg0-dev libopencv-dev
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP   := $(VENV)/.pct-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# System libraries ffcv compiles against, the venv, and the package with its extras.
$(STAMP): pyproject.toml
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; }
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,plot,timm]'
	@touch $@

demo: setup
	bash demo/run.sh demo-out

# Test files are spread over TEST_WORKERS pytest-xdist processes, each file whole in one of them
# (its module fixtures are built once); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: setup
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf demo-out bench/out

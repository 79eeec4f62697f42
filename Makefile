# Set-up, demo, proof and tests. Each target installs everything it needs first.
VENV    ?= .venv
PYTHON  ?= python3
APT_PKGS = pkg-config libturbojpeg0-dev libopencv-dev dataset-fashion-mnist
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP   := $(VENV)/.pct-installed

.PHONY: setup demo proof test bench clean

setup: $(STAMP)

# System libraries ffcv compiles against, Fashion-MNIST, the venv, and the package with its extras.
$(STAMP): pyproject.toml
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; }
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,plot,timm]'
	@touch $@

demo: setup
	bash demo/run.sh demo-out

# The PCT result on Fashion-MNIST (60,000 / 10,000 images); SEEDS="4 5 6" make proof for others.
proof: setup
	bash demo/proof.sh proof-out

# Test files are spread over TEST_WORKERS pytest-xdist processes, each file whole in one of them
# (its module fixtures are built once); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: setup
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf demo-out proof-out bench/out

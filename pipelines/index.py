"""The index pipeline: load (docling) -> chunk -> embed -> store + FAISS search index.

- ``ragtune index --source PATH... --out DIR`` runs exactly :func:`index_pipeline` on this machine through
  ``kfp.local`` (SubprocessRunner, the current interpreter) and leaves the local index in DIR, which the retriever
  serves with ``python -m serving.retriever --index DIR``.
- ``ragtune compile`` / ``make compile`` writes ``pipelines/compiled/index_pipeline.yaml`` for the Kubeflow UI; there
  the store step mounts the PVC ``index_pvc`` at ``/index`` (``store_dir`` defaults to a folder on it).
"""


import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from kfp import dsl
from kfp import kubernetes
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from components.index.component import chunk_documents, embed_chunks, load_documents, store_embeddings

log = logging.getLogger("ragtune.index")

PIPELINE_NAME = "ragtune-index"
REPO_ROOT = Path(__file__).resolve().parent.parent
#: where the store step mounts the index volume in the cluster
CLUSTER_INDEX_MOUNT = "/index"


@dsl.pipeline(name=PIPELINE_NAME, description="Index documents for RAG: docling -> HybridChunker -> MiniLM -> store.")
def index_pipeline(
    sources: list,
    store_dir: str = f"{CLUSTER_INDEX_MOUNT}/ragtune",
    store: str = "local",
    ann: str = "flat",
    max_tokens: int = 256,
    embedding_model: str = "",
    batch_size: int = 64,
    layout_models: str = "",
    hopsworks_host: str = "",
    hopsworks_project: str = "",
    index_pvc: str = "ragtune-index",
) -> dsl.Artifact:
    """Index ``sources`` into the chosen store and leave a FAISS search index in ``store_dir``.

    Args:
        sources: files and/or folders (PDF, Markdown, HTML, DOCX).
        store_dir: local index directory (the retriever's --index); in the cluster a path on ``index_pvc``.
        store: "local" or "hopsworks".
        ann: search index: "flat" (exact), "hnsw" or "ivf".
        max_tokens: most tokens per chunk.
        embedding_model: sentence-transformers model folder or id; empty = packaged all-MiniLM-L6-v2.
        batch_size: embedding batch size.
        layout_models: docling layout weights folder for the standard PDF pipeline; empty = native PDF pipeline.
        hopsworks_host: Hopsworks host (store=hopsworks; key from HOPSWORKS_API_KEY).
        hopsworks_project: Hopsworks project (store=hopsworks).
        index_pvc: PVC mounted at /index for the store step in the cluster (ignored by the local runner).

    Returns:
        the store step's summary artifact (JSON: store, store_dir, ann, added / removed / unchanged / total).
    """
    load = load_documents(sources=sources, layout_models=layout_models)
    chunk = chunk_documents(documents=load.outputs["documents"], max_tokens=max_tokens,
                            embedding_model=embedding_model)
    embed = embed_chunks(chunks=chunk.outputs["chunks"], embedding_model=embedding_model, batch_size=batch_size)
    save = store_embeddings(
        embeddings=embed.outputs["embeddings"], store=store, store_dir=store_dir, ann=ann,
        hopsworks_host=hopsworks_host, hopsworks_project=hopsworks_project,
    )
    # The store step changes state outside its outputs (the index directory, the feature group): never reuse it.
    save.set_caching_options(False)
    save.set_display_name("store-and-build-search-index")
    kubernetes.mount_pvc(save, pvc_name=index_pvc, mount_path=CLUSTER_INDEX_MOUNT)
    # The Hopsworks key, when the store is hopsworks; optional so a local-store run needs no Secret.
    kubernetes.use_secret_as_env(
        save, secret_name="hopsworks-api-key", secret_key_to_env={"api-key": "HOPSWORKS_API_KEY"}, optional=True
    )
    return save.outputs["index"]


class IndexSettings(BaseSettings):
    """``ragtune index`` settings: command-line flags, or ``RAGTUNE_INDEX_<FIELD>`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_INDEX_", extra="forbid")

    source: list[str] = Field(min_length=1, description="Files and/or folders to index (PDF, Markdown, HTML, DOCX).")
    out: Path = Field(description="Index directory to create or update (the retriever's --index).")
    store: Literal["local", "hopsworks"] = Field("local", description="Embedding store: local or hopsworks.")
    ann: Literal["flat", "hnsw", "ivf"] = Field("flat", description="Search index: flat (exact), hnsw or ivf.")
    max_tokens: int = Field(256, ge=16, le=8192, description="Most tokens per chunk, headings included.")
    embedding_model: str = Field("", description="sentence-transformers model folder or id; empty = packaged MiniLM.")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding batch.")
    layout_models: Path | None = Field(None, description="docling layout weights: use the standard PDF pipeline.")
    hopsworks_host: str = Field("", description="Hopsworks host (store=hopsworks).")
    hopsworks_project: str = Field("", description="Hopsworks project (store=hopsworks).")
    pipeline_root: Path | None = Field(
        None, description="Keep kfp.local step artifacts here; default: a temporary folder removed afterwards."
    )

    @field_validator("layout_models")
    @classmethod
    def _layout_models_is_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("out")
    @classmethod
    def _out_is_not_a_file(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a folder")
        return value

    def preflight(self) -> None:
        """Checks that need the file system or environment; raises :class:`IndexSettingsError` naming the flag.

        Single missing sources are only reported and skipped by the run; here it fails when none exists at all.
        """
        if not any(Path(s).expanduser().exists() for s in self.source):
            raise IndexSettingsError("source", f"none of {', '.join(self.source)} exists")
        if self.store == "hopsworks" and not os.environ.get("HOPSWORKS_API_KEY"):
            raise IndexSettingsError("store", "hopsworks needs the API key in the HOPSWORKS_API_KEY variable")
        if self.layout_models is not None:
            from components.index.load import LoadError, check_layout_models

            try:
                check_layout_models(self.layout_models)
            except LoadError as exc:
                raise IndexSettingsError("layout_models", str(exc).removeprefix("layout_models").lstrip(": ")) from None


class IndexSettingsError(ValueError):
    """A setting is unusable; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IndexRunError(RuntimeError):
    """A pipeline step failed; the message names the step."""


def _hide_dockerfiles_folder() -> None:
    """Keep the checkout's ``docker/`` folder (Dockerfiles) from passing for the Docker SDK.

    kfp.local imports the Docker SDK when it can; with the repository root on ``sys.path`` (``python -m ...`` from the
    checkout) the folder imports as a namespace package, and kfp then fails on ``docker.DockerClient``. Without the
    SDK installed, marking the name as absent lets kfp take its "no Docker" path, which the SubprocessRunner needs.
    """
    import importlib.util
    import sys

    if "docker" in sys.modules:
        return
    spec = importlib.util.find_spec("docker")
    if spec is not None and spec.origin is None and spec.submodule_search_locations is not None:
        sys.modules["docker"] = None  # type: ignore[assignment]  # makes `import docker` raise ImportError


def run_local(settings: IndexSettings) -> dict[str, Any]:
    """Run :func:`index_pipeline` with ``kfp.local`` and return the store step's summary."""
    _hide_dockerfiles_folder()
    from kfp import local

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep = settings.pipeline_root is not None
    root = Path(settings.pipeline_root) if keep else Path(tempfile.mkdtemp(prefix="ragtune-index-"))
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root.resolve()))
    started = time.perf_counter()
    try:
        task = index_pipeline(
            sources=[str(Path(s).expanduser().resolve()) for s in settings.source],
            store_dir=str(settings.out.expanduser().resolve()),
            store=settings.store,
            ann=settings.ann,
            max_tokens=settings.max_tokens,
            embedding_model=settings.embedding_model,
            batch_size=settings.batch_size,
            layout_models=str(settings.layout_models.resolve()) if settings.layout_models else "",
            hopsworks_host=settings.hopsworks_host,
            hopsworks_project=settings.hopsworks_project,
        )
        summary = json.loads(Path(task.output.path).read_text(encoding="utf-8"))
    except RuntimeError as exc:
        raise IndexRunError(f"the index pipeline failed: {exc}") from exc
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


# -- the `ragtune index` command -----------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ragtune index``."""
    fields = IndexSettings.model_fields
    parser = subparsers.add_parser(
        "index",
        help="index documents into a local search index (runs the index pipeline with kfp.local)",
        description="Load (docling) -> chunk -> embed -> store, run locally through kfp.local; the index in --out is "
        "what `python -m serving.retriever --index DIR` serves.",
    )
    parser.add_argument("--source", nargs="+", action="extend", metavar="PATH", help=fields["source"].description)
    parser.add_argument("--out", metavar="DIR", help=fields["out"].description)
    parser.add_argument("--store", help=fields["store"].description + " Default: local.")
    parser.add_argument("--ann", help=fields["ann"].description + " Default: flat.")
    parser.add_argument("--max-tokens", help=fields["max_tokens"].description + " Default: 256.")
    parser.add_argument("--embedding-model", metavar="PATH_OR_ID", help=fields["embedding_model"].description)
    parser.add_argument("--batch-size", help=fields["batch_size"].description + " Default: 64.")
    parser.add_argument("--layout-models", metavar="DIR", help=fields["layout_models"].description)
    parser.add_argument("--hopsworks-host", help=fields["hopsworks_host"].description)
    parser.add_argument("--hopsworks-project", help=fields["hopsworks_project"].description)
    parser.add_argument("--pipeline-root", metavar="DIR", help=fields["pipeline_root"].description)
    parser.set_defaults(func=_main)


def settings_from_args(args: argparse.Namespace) -> IndexSettings:
    """Validated settings from parsed flags (flags win over RAGTUNE_INDEX_* variables)."""
    from pipelines.cli import CliError

    given = {
        key: value
        for key, value in vars(args).items()
        if key in IndexSettings.model_fields and value is not None
    }
    try:
        settings = IndexSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "arguments"
        flag = "--" + name.replace("_", "-")
        detail = first["msg"]
        if first["type"] == "missing":
            detail = "is required"
        raise CliError(f"{flag}: {detail}") from None
    try:
        settings.preflight()
    except IndexSettingsError as exc:
        raise CliError(f"--{exc.field.replace('_', '-')}: {exc.message}") from None
    return settings


def _main(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = settings_from_args(args)
    log.info("event=index_start sources=%d out=%s store=%s ann=%s", len(settings.source), settings.out,
             settings.store, settings.ann)
    try:
        summary = run_local(settings)
    except IndexRunError as exc:
        raise CliError(f"{exc} (the failing step's log is above)") from None
    stats = summary["stats"]
    print(json.dumps({"event": "index_done", **{k: summary[k] for k in ("store", "store_dir", "ann", "seconds")},
                      **stats}))
    print(f"index ready in {summary['store_dir']}: {stats['total']} chunks "
          f"(+{stats['added']} / -{stats['removed']} / ={stats['unchanged']})")
    print(f"serve it: python -m serving.retriever --index {summary['store_dir']} --http_port 8080")
    return 0


if __name__ == "__main__":  # pragma: no cover - convenience: python -m pipelines.index ...
    import sys

    from pipelines.cli import main

    sys.exit(main(["index", *sys.argv[1:]]))

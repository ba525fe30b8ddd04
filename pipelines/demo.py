"""``make demo``: the whole stack on this machine, in one command, offline by default.

1. the index pipeline on the sample corpus and the fine-tuning pipeline on a small slice, both through ``kfp.local``;
2. the fine-tuned GGUF published into the demo's model catalog, beside the packaged base model;
3. the retriever predictor, the LLM predictor and Chainlit started as processes;
4. readiness awaited, then the chat URL and a ready-to-paste request printed.

Ctrl-C stops every process it started. A second run reuses what is built: the index is rebuilt only when the source
files change, the fine-tune only when its config changes or its published model is missing. Real sources are chosen by
configuration: ``RAGTUNE_DEMO_FINETUNE_CONFIG`` (a config naming a Hub model or FineTome), ``RAGTUNE_DEMO_FINETUNE_SET``
(``key=value`` overrides, comma-separated), ``RAGTUNE_DEMO_SOURCES`` and ``RAGTUNE_DEMO_STORE=hopsworks`` (with
``HOPSWORKS_API_KEY``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from components.manifest import atomic_write_text, sha256_file

log = logging.getLogger("ragtune.demo")
REPO_ROOT = Path(__file__).resolve().parent.parent


class DemoSettings(BaseSettings):
    """What ``make demo`` runs; every field can be set as ``RAGTUNE_DEMO_<FIELD>`` or a flag."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_DEMO_", extra="forbid")

    home: Path = Field(REPO_ROOT / ".ragtune" / "demo", description="Where the index, models and catalog are kept.")
    sources: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [str(REPO_ROOT / "data" / "sample_corpus")],
        description="Documents to index (comma-separated in the environment).",
    )
    store: Literal["local", "hopsworks"] = Field("local", description="Embedding store for the index pipeline.")
    finetune: bool = Field(True, description="Run the fine-tuning pipeline (false: serve the packaged model only).")
    finetune_config: Path = Field(
        REPO_ROOT / "configs" / "finetune-demo.yaml", description="Fine-tuning config file (ragtune finetune --config)."
    )
    finetune_set: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Overrides for the fine-tuning config, key=value (comma-separated in env)."
    )
    host: str = Field("127.0.0.1", description="Address the three servers listen on.")
    retriever_port: int = Field(8081, ge=1024, le=65535, description="Retriever predictor port.")
    llm_port: int = Field(8082, ge=1024, le=65535, description="LLM predictor port.")
    chat_port: int = Field(8000, ge=1024, le=65535, description="Chainlit port.")
    ready_timeout_s: float = Field(300, gt=0, le=3600, description="Seconds to wait for each server to be ready.")

    @field_validator("sources", "finetune_set", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.yaml"


# -- step 1: index --------------------------------------------------------------------------------------------------


def _fingerprint(paths: list[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            digest.update(str(f).encode())
            digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def ensure_index(s: DemoSettings) -> None:
    """Run the index pipeline unless the index already holds exactly these sources."""
    from components.index.search import IndexLoadError, load_index
    from pipelines.index import IndexSettings, run_local

    stamp = s.home / "index.fingerprint"
    fingerprint = _fingerprint([Path(p) for p in s.sources], extra=s.store)
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        try:
            load_index(s.index_dir)  # verifies every file against its manifest
            print(f"[1/4] index: up to date in {s.index_dir}")
            return
        except IndexLoadError as exc:
            print(f"      index unusable ({exc}); rebuilding")
    print(f"[1/4] index: running the index pipeline (kfp.local) on {', '.join(s.sources)}")
    summary = run_local(IndexSettings(source=s.sources, out=s.index_dir, store=s.store))
    stats = summary["stats"]
    print(f"      {stats['total']} chunks in {s.index_dir} ({summary['seconds']} s)")
    atomic_write_text(stamp, fingerprint + "\n")


# -- step 2: fine-tune and publish -------------------------------------------------------------------------------------


def ensure_catalog(s: DemoSettings) -> None:
    """Put the packaged base model in the demo catalog, then fine-tune and publish unless already done."""
    from serving.llm.catalog import Catalog, CatalogError, resolve_source, verify_sha256

    base = Catalog.load(REPO_ROOT / "serving" / "llm" / "default_catalog.yaml")
    catalog = Catalog.load_or_empty(s.catalog_path)
    for entry in base.models:
        if catalog.get(entry.name) is None:
            catalog.upsert(entry)
    catalog.save(s.catalog_path)
    if not s.finetune:
        print("[2/4] fine-tune: skipped (RAGTUNE_DEMO_FINETUNE=false); serving the packaged model")
        return

    from pipelines.finetune import FinetuneConfig, run_local

    overrides = [
        f"publish.catalog_path={s.catalog_path}",
        f"publish.store_dir={s.home / 'models'}",
        f"run.pipeline_root={s.home / 'pipeline-root'}",
        *s.finetune_set,
    ]
    cfg = FinetuneConfig.load(s.finetune_config, overrides)
    stamp = s.home / "finetune.fingerprint"
    fingerprint = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        tuned = [m for m in Catalog.load(s.catalog_path).models if "fine-tuned" in m.tags]
        try:
            for entry in tuned:
                verify_sha256(entry, resolve_source(entry, s.catalog_path))
            print(f"[2/4] fine-tune: up to date ({', '.join(m.name for m in tuned) or 'gate kept the base model'})")
            return
        except CatalogError as exc:
            print(f"      published model changed or missing ({exc}); fine-tuning again")
    print(f"[2/4] fine-tune: running the fine-tuning pipeline (kfp.local) with {s.finetune_config}")
    result = run_local(cfg)
    print(f"      {json.dumps(result, default=str)[:400]}")
    atomic_write_text(stamp, fingerprint + "\n")


# -- steps 3-4: serve ---------------------------------------------------------------------------------------------------


class Stack:
    """The demo's server processes; stopped together."""

    def __init__(self, s: DemoSettings) -> None:
        self.s = s
        self.procs: list[tuple[str, subprocess.Popen]] = []
        (s.home / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log_file = open(self.s.home / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.procs.append((name, proc))

    def wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.s.ready_timeout_s
        proc = dict(self.procs)[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.s.home / 'logs' / (name + '.log')}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} not ready at {url} after {self.s.ready_timeout_s:.0f} s")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def watch(self) -> int:
        """Block until Ctrl-C (0) or until a server dies (1)."""
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    print(f"{name} stopped with exit code {proc.returncode}; see {self.s.home / 'logs'}")
                    return 1
            time.sleep(1)


def serve(s: DemoSettings) -> int:
    py = sys.executable
    base = f"http://{s.host}"
    stack = Stack(s)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print("[3/4] starting the retriever, the LLM predictor and the chat")
        stack.start("retriever", [py, "-m", "serving.retriever", "--index", str(s.index_dir),
                                  "--http_port", str(s.retriever_port)])
        stack.start("llm", [py, "-m", "serving.llm", "--catalog", str(s.catalog_path),
                            "--http_port", str(s.llm_port)])
        stack.start(
            "chat",
            [py, "-m", "frontend", "--host", s.host, "--port", str(s.chat_port)],
            env={"RAGTUNE_CHAT_RETRIEVER_URL": f"{base}:{s.retriever_port}",
                 "RAGTUNE_CHAT_LLM_URL": f"{base}:{s.llm_port}"},
        )
        print("[4/4] waiting for readiness")
        stack.wait_ready("retriever", f"{base}:{s.retriever_port}/v2/models/retriever/ready")
        stack.wait_ready("llm", f"{base}:{s.llm_port}/v2/health/ready")
        stack.wait_ready("chat", f"{base}:{s.chat_port}/readyz")
        print(f"""
ragtune is up. Logs: {s.home / 'logs'}

  chat       {base}:{s.chat_port}
  retriever  {base}:{s.retriever_port}/v1/models/retriever:predict
  llm        {base}:{s.llm_port}/openai/v1

Try:
  curl -s {base}:{s.retriever_port}/v1/models/retriever:predict \\
       -d '{{"instances": [{{"query": "How do I create a virtual environment?", "top_k": 3}}]}}'
  curl -s {base}:{s.llm_port}/openai/v1/models

Ctrl-C stops everything.""", flush=True)
        return stack.watch()
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-serve", action="store_true", help="build the index and models, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        s = DemoSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"demo: RAGTUNE_DEMO_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    s.home.mkdir(parents=True, exist_ok=True)
    try:
        ensure_index(s)
        ensure_catalog(s)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    except Exception as exc:  # a failed pipeline step already logged its details above
        print(f"demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.no_serve:
        return 0
    return serve(s)


if __name__ == "__main__":
    sys.exit(main())

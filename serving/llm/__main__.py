"""``python -m serving.llm --catalog FILE --http_port PORT [...]``: the LLM predictor (see serving/llm/README.md)."""

from __future__ import annotations

import sys

from serving.llm.catalog import CatalogError
from serving.llm.settings import SettingsError, settings_from_argv
from serving.llm.telemetry import configure_logging


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from_argv(argv)
        configure_logging(settings.log_level)
        from serving.llm.server import serve  # heavy imports (kserve, llama.cpp) only after the settings are valid

        return serve(settings)
    except (SettingsError, CatalogError) as exc:
        print(f"serving.llm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

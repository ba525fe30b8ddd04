"""``python -m frontend [--host H] [--port P]``: validate the settings, then serve the chat with Chainlit.

Chainlit reads ``.chainlit/config.toml`` and ``chainlit.md`` from its app root, so this points
``CHAINLIT_APP_ROOT`` at this folder whatever the current directory is.
"""

from __future__ import annotations

import argparse
import os
import sys

from frontend.settings import FRONTEND_DIR, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frontend", description="Serve the ragtune RAG chat.")
    parser.add_argument("--host", default=os.environ.get("CHAINLIT_HOST", "127.0.0.1"), help="address to bind")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("CHAINLIT_PORT", "8000")), help="port to listen on"
    )
    parser.add_argument("--watch", action="store_true", help="reload when the app's files change (development)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        print("python -m frontend: error: --port must be between 1 and 65535", file=sys.stderr)
        return 2
    try:
        load_settings()  # fail here, with the bad field named, rather than inside Chainlit
    except SettingsError as exc:
        print(f"python -m frontend: error: {exc}", file=sys.stderr)
        return 2
    os.environ["CHAINLIT_APP_ROOT"] = str(FRONTEND_DIR)
    os.chdir(FRONTEND_DIR)
    argv_cl = [sys.executable, "-m", "chainlit", "run", "app.py", "--headless", "--host", args.host, "--port", str(args.port)]
    if args.watch:
        argv_cl.append("--watch")
    os.execv(sys.executable, argv_cl)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    raise SystemExit(main())

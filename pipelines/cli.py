"""The ``ragtune`` command. Each subcommand lives with the pipeline it runs; this file only dispatches.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (taking the parsed
args, returning an exit code). Modules are imported lazily so ``ragtune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> module providing register(subparsers)
SUBCOMMANDS = {
    "index": "pipelines.index",
    "finetune": "pipelines.finetune",
    "compile": "pipelines.compile",
}


class CliError(Exception):
    """A user mistake on the command line: printed as one line, exit code 2."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragtune", description="Fine-tune, index, serve and chat, locally or on Kubeflow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"see 'ragtune {name} --help'")
            continue
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    if wanted is None and argv and not argv[0].startswith("-"):
        print(f"ragtune: unknown command {argv[0]!r}; choose from: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    parser = build_parser(only=wanted) if wanted else argparse.ArgumentParser(
        prog="ragtune", description="Fine-tune, index, serve and chat, locally or on Kubeflow."
    )
    if wanted is None:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name in SUBCOMMANDS:
            sub.add_parser(name, help=f"see 'ragtune {name} --help'")
        parser.parse_args(argv)
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"ragtune {wanted}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ragtune {wanted}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

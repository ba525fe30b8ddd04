"""``python -m components.data --out DIR [--set key=value ...]``: prepare a chat dataset (train / held-out split).

Exit codes: 0 done, 2 bad input (the message names the field or source).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (train.jsonl, heldout.jsonl, stats.json)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="one DataConfig field, e.g. --set max_examples=500; repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("RAGTUNE_LOG_LEVEL", "INFO"), format="%(message)s", stream=sys.stderr)

    from components.data.fields import ConfigError, parse_assignments
    from components.data.prepare import DataConfig, DataError, prepare_dataset

    try:
        cfg = DataConfig.from_dict(parse_assignments(args.assignments))
        stats = prepare_dataset(cfg, args.out)
    except (ConfigError, DataError) as exc:
        print(f"data: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

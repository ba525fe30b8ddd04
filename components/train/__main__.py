"""``python -m components.train --data DIR --out DIR [--config FILE] [--set key=value ...]``: run one training.

Exit codes: 0 done, 2 bad input (the message names the field), 143 preempted by SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder written by the data component")
    parser.add_argument("--out", required=True, help="output folder (adapter/, merged/, report.json)")
    parser.add_argument("--config", help="YAML/JSON file of TrainConfig fields (optionally under 'train:')")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override one TrainConfig field; repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("RAGTUNE_LOG_LEVEL", "INFO"), format="%(message)s", stream=sys.stderr)

    from components.data.fields import ConfigError, parse_assignments
    from components.data.sources import DataError
    from components.data.tokenize import ChatTemplateError
    from components.train.backends import BackendError
    from components.train.base_model import BaseModelError
    from components.train.checkpoints import CheckpointStoreError
    from components.train.config import TrainConfig
    from components.train.trainer import TrainError, TrainingPreempted, result_to_dict, train

    try:
        overrides = parse_assignments(args.assignments)
        cfg = TrainConfig.from_file(args.config, overrides) if args.config else TrainConfig.from_dict(overrides)
        result = train(cfg, args.data, args.out)
    except (ConfigError, DataError, BaseModelError, BackendError, CheckpointStoreError, ChatTemplateError,
            TrainError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingPreempted as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    summary = result_to_dict(result)
    summary.pop("report", None)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

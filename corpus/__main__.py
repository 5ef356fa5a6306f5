"""`python -m corpus <stage> --config FILE [--set key=value ...]`: the data stages.

    python -m corpus clean --config configs/demo.yaml [--workers N] [--fresh]
    python -m corpus tokenizer --config ...     (corpus/tokenizer.py: main(argv))
    python -m corpus shards --config ...        (corpus/shards/: main(argv))
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from common.config import ConfigError, add_config_args, config_from_args
from common.log import setup_logging

# Subcommands implemented in other modules: name -> "module:function". Each function takes the
# remaining argv (everything after the subcommand name) and returns an exit code.
# ---- other stages register here ------------------------------------------------------------------
EXTERNAL = {
    "tokenizer": "corpus.tokenizer:main",
    "shards": "corpus.shards:main",
}
# ---------------------------------------------------------------------------------------------------


def clean_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m corpus clean",
                                     description="Raw text -> clean, deduplicated documents (corpus.out_dir)")
    add_config_args(parser)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: corpus.workers; 0 = all cores)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard finished parts in corpus.out_dir and start over")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    try:
        cfg = config_from_args(args)
        from corpus.pipeline import run_clean

        run_clean(cfg, workers=args.workers, fresh=args.fresh)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"clean": "raw text -> clean documents", **{k: f"see {v.split(':')[0]}" for k, v in EXTERNAL.items()}}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        parser = argparse.ArgumentParser(prog="python -m corpus", description="Corpus stages.")
        sub = parser.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(commands) + "}")
        for name, help_ in commands.items():
            sub.add_parser(name, help=help_, add_help=False)
        parser.parse_args(argv)  # prints usage / error and exits
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "clean":
        return clean_main(rest)
    module, func = EXTERNAL[cmd].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            print(f"`{cmd}` is not available: {module} is missing from this checkout", file=sys.stderr)
            return 2
        raise
    return int(getattr(mod, func)(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

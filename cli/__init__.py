"""The ``lugha`` command: a thin layer over library calls.

Each subcommand lives in its own module exposing ``HELP``, ``configure(parser)`` and ``run(args) -> int``.
Modules must stay cheap to import (no torch at module level) so ``lugha --help`` is instant on a Pi.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from lugha import __version__
from lugha.errors import LughaError

# Order is the order shown in --help: the pipeline from data to the field.
COMMANDS = ("data", "weights", "train", "eval", "export", "bundle", "bench", "doctor", "serve", "feedback", "experiments",
            "quickstart")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lugha",
        description="Image-text models for low-resource languages: data -> train -> export -> device.",
        epilog="Start with `lugha quickstart`, or `lugha COMMAND --help` for any step.",
    )
    parser.add_argument("--version", action="version", version=f"lugha {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = importlib.import_module(f"{__name__}.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure(p)
        # a command made of sub-actions (data, bundle, feedback, experiments) has no run of its own: called
        # without a sub-action it prints its help and exits 2, as argparse does for a usage error
        p.set_defaults(_run=getattr(p, "_defaults", {}).get("_run", getattr(mod, "run", _group_help)), _parser=p)
    return parser


def _group_help(args: argparse.Namespace) -> int:
    args._parser.print_help()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except LughaError as e:
        print(f"lugha {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        from lugha.atomic import FULL_ERRNOS

        if e.errno not in FULL_ERRNOS:
            raise
        # a full SD card mid-export or mid-check: one line that says what happened, not a traceback
        where = f" writing {e.filename}" if e.filename else ""
        print(f"lugha {args.command}: error: no space left on the device{where} ({e.strerror or e}); "
              "free some space and run it again", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

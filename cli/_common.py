"""Small helpers shared by subcommands."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


# --pubkey of serve, bench and doctor (lugha.runtimes.signature does the checking)
PUBKEY_HELP = ("refuse the bundle unless manifest.json.sig is a signature by this ed25519 public key "
               "(default: the keys in ~/.config/lugha/trusted_keys/*.pem or $LUGHA_CONFIG/trusted_keys/, "
               "if any; with either, unsigned bundles are refused)")


def not_available(what: str, issue: str):
    """A ``run`` for a subcommand whose capability is not built yet: says so, exits 3, never pretends."""

    def run(args: argparse.Namespace) -> int:
        print(f"lugha {what}: not available yet ({issue}).", file=sys.stderr)
        return 3

    return run


def user_path(text: str) -> str:
    """argparse ``type`` of every path a user types: made absolute against the working directory once, at
    the CLI boundary, before any work (no library call then depends on where the process stands). ``-``
    (stdout/stdin) stays ``-``; ``~`` is expanded; symlinks are kept as typed."""
    return text if text == "-" else os.path.abspath(os.path.expanduser(text))


def user_path_obj(text: str) -> Path:
    """:func:`user_path` for options whose code wants a :class:`~pathlib.Path`."""
    return Path(user_path(text))

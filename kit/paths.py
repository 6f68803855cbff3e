"""Where lugha keeps things it builds once: materialised weights, caches, npm/apt data pointers.

``LUGHA_HOME`` (default ``~/.cache/lugha``) so a field laptop can point it at a USB stick.
"""
from __future__ import annotations

import os
from pathlib import Path


def lugha_home() -> Path:
    return Path(os.environ.get("LUGHA_HOME") or Path.home() / ".cache" / "lugha")


def weights_dir(name: str) -> Path:
    """Folder of materialised offline weights, e.g. ``weights_dir("e5-small")`` (a transformers folder)."""
    return lugha_home() / "weights" / name


def config_dir() -> Path:
    """Where lugha reads settings a person puts there on purpose (``trusted_keys/``): ``LUGHA_CONFIG``, else
    ``$XDG_CONFIG_HOME/lugha``, else ``~/.config/lugha``. Apart from LUGHA_HOME: a cache may be wiped, this not."""
    if os.environ.get("LUGHA_CONFIG"):
        return Path(os.environ["LUGHA_CONFIG"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "lugha"

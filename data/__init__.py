"""Dataset tooling (``data/``, one floor above the contract): the demo data, importers, validation, splits
and tokenizer coverage. The record format itself is contract (:mod:`lugha.records`), re-exported here.

Torch-free (stdlib + numpy + Pillow), so data can be checked on the machine that collected it.
"""
from lugha.records import Record, read_manifest, write_manifest

__all__ = ["Record", "read_manifest", "write_manifest"]

"""Datasets: the JSONL manifest, the demo data, importers, validation, splits and tokenizer coverage.

Stdlib + numpy + Pillow only (the kit's rule), so data can be checked on the machine that collected it.
"""
from lugha.records import Record, read_manifest, write_manifest

__all__ = ["Record", "read_manifest", "write_manifest"]

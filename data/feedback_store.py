"""The field app's judgments, read straight from its SQLite file for a study report.

The data floor may not import the runtimes, so this reads the database with :mod:`sqlite3` (read-only:
a report never writes to the study's only copy) and checks the schema against the database itself: the
``meta.schema_version`` the server wrote and the ``feedback`` table's columns.

An *item* is one (mode, language, query, result) shown to testers: the same photo (by its SHA-256) or
the same typed text, answered with the same label or gallery image. Judgments of one item by several
testers are what agreement is measured on.
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lugha.errors import DataError

SCHEMA_VERSIONS = (1,)  # the feedback schema versions this reader understands
NEEDED_COLUMNS = ("id", "session", "tester_lang", "mode", "lang", "query_text", "query_image", "result",
                  "rank", "score", "correct", "appropriate", "better_caption")
SCORE_FIELDS = ("mode", "lang", "query", "result", "score")


@dataclass(frozen=True)
class Judgment:
    """One row of the ``feedback`` table, reduced to what a study needs."""
    id: int
    tester: str  # the consented session: one tester on one phone
    group: str  # the tester group: the language the tester consented with
    mode: str
    lang: str
    query: str  # photo SHA-256 (image mode) or the typed text (text mode)
    result: str
    rank: int | None
    score: float | None  # the served model's similarity for this result
    correct: int | None
    appropriate: int | None
    better_caption: str | None

    @property
    def item(self) -> str:
        return item_key(self.mode, self.lang, self.query, self.result)


def item_key(mode: str, lang: str, query: str, result: str) -> str:
    """The string an item is known by in reports and score files: ``mode|lang|query|result``."""
    return "|".join((mode, lang, query, result))


def read_judgments(path: str | os.PathLike) -> list[Judgment]:
    """Every judgment in the field app's database, oldest first."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no feedback database here (start `lugha serve --db {path}` first)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise DataError(f"{path}: cannot open the feedback database read-only ({e})") from None
    try:
        _check_schema(conn, path)
        cur = conn.execute(f"SELECT {', '.join(NEEDED_COLUMNS)} FROM feedback ORDER BY id")
        rows = [dict(zip(NEEDED_COLUMNS, r)) for r in cur.fetchall()]
    except sqlite3.DatabaseError as e:
        raise DataError(f"{path}: not a feedback database ({e})") from None
    finally:
        conn.close()
    return [_judgment(r) for r in rows]


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing_tables = {"meta", "feedback"} - tables
    if missing_tables:
        raise DataError(f"{path}: not a feedback database (no table(s) {sorted(missing_tables)})")
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else None
    if version not in SCHEMA_VERSIONS:
        raise DataError(f"{path}: feedback schema {version}, this report reads {list(SCHEMA_VERSIONS)}")
    columns = {r[1] for r in conn.execute("PRAGMA table_info(feedback)")}
    missing = [c for c in NEEDED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{path}: feedback table lacks column(s) {missing}")


def _judgment(r: dict[str, Any]) -> Judgment:
    query = r["query_image"] if r["mode"] == "image" else r["query_text"]
    return Judgment(id=int(r["id"]), tester=str(r["session"]), group=str(r["tester_lang"]), mode=str(r["mode"]),
                    lang=str(r["lang"]), query=str(query or ""), result=str(r["result"]), rank=r["rank"],
                    score=None if r["score"] is None else float(r["score"]), correct=r["correct"],
                    appropriate=r["appropriate"], better_caption=r["better_caption"] or None)


def read_scores(path: str | os.PathLike) -> dict[str, float]:
    """Automatic per-item scores from a CSV (header ``mode,lang,query,result,score``) or a JSONL file of
    objects with those keys. ``query``: the photo's SHA-256 (``sha256sum photo.jpg``) for image queries,
    the typed text for text queries; ``score``: any number where higher means "the model is more right"
    (a similarity, or a 0/1 R@1 hit from an eval)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no scores file here")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [f for f in SCORE_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: CSV header lacks {missing} (needs {', '.join(SCORE_FIELDS)})")
        rows = [(f"{path}:{n}", row) for n, row in enumerate(reader, start=2)]
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    scores: dict[str, float] = {}
    for where, row in rows:
        missing = [f for f in SCORE_FIELDS if row.get(f) in (None, "")]
        if missing:
            raise DataError(f"{where}: missing {missing}")
        try:
            value = float(row["score"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: score {row['score']!r} is not a number") from None
        key = item_key(str(row["mode"]), str(row["lang"]), str(row["query"]), str(row["result"]))
        if key in scores and scores[key] != value:
            raise DataError(f"{where}: item {key} scored twice ({scores[key]} and {value})")
        scores[key] = value
    return scores


__all__ = ["Judgment", "item_key", "read_judgments", "read_scores", "SCHEMA_VERSIONS", "NEEDED_COLUMNS",
           "SCORE_FIELDS"]

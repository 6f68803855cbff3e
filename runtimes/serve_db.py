"""The field app's store: consent, consented uploads and judgments in one SQLite file on the Pi.

WAL + ``synchronous=FULL``: a judgment is acknowledged to the phone only after its transaction is on
disk, so pulling the Pi's power (or ``kill -9``) loses nothing that was acknowledged (a test kills a
real server mid-write and counts). Uploaded photos are written (temp file, fsync, rename, fsync of the
folder) *before* the row that names them. Nothing here talks to the network.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lugha.atomic import FULL_ERRNOS, atomic_write_bytes
from lugha.errors import DataError

# Columns added later (uploads.bytes, feedback.review/reviewed) are added in place by ALTER TABLE: readers
# that name their columns (data/feedback_store.py) keep working, so the version stays 1.
SCHEMA_VERSION = 1
CONSENT_VERSION = 1  # bump when the consent text changes, so old consents can be told apart

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS consent (
    session TEXT PRIMARY KEY, tester_lang TEXT NOT NULL, consent_version INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    sha256 TEXT PRIMARY KEY, file TEXT NOT NULL, width INTEGER, height INTEGER, session TEXT, created REAL NOT NULL,
    bytes INTEGER);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    session TEXT NOT NULL REFERENCES consent(session),
    tester_lang TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('image', 'text')),
    lang TEXT NOT NULL,
    query_text TEXT,
    query_image TEXT REFERENCES uploads(sha256),
    result TEXT NOT NULL,
    result_image TEXT,
    rank INTEGER,
    score REAL,
    correct INTEGER CHECK (correct IN (0, 1)),
    appropriate INTEGER CHECK (appropriate IN (0, 1)),
    better_caption TEXT,
    model TEXT, precision TEXT, backend TEXT, on_phone INTEGER NOT NULL DEFAULT 0,
    review INTEGER CHECK (review IN (0, 1)),
    reviewed REAL);
CREATE INDEX IF NOT EXISTS feedback_lang ON feedback (lang, mode);
CREATE INDEX IF NOT EXISTS uploads_session ON uploads (session);
"""
# (table, column, declaration) for databases made before the column existed
_ADDED_COLUMNS = (("uploads", "bytes", "INTEGER"), ("feedback", "review", "INTEGER CHECK (review IN (0, 1))"),
                  ("feedback", "reviewed", "REAL"))


# judgments export can turn into training rows (a better caption, or a result confirmed and not judged
# inappropriate) that no one has reviewed yet
_REVIEWABLE = "review IS NULL AND (better_caption IS NOT NULL OR (correct = 1 AND appropriate IS NOT 0))"


class StorageRefused(DataError):
    """An upload the store will not keep (a quota, or too little free space); ``status`` is the HTTP one."""

    status = 507


@dataclass(frozen=True)
class UploadQuota:
    """How much photo storage the hotspot may use. ``reserve_bytes`` stays free on the disk whatever the
    quotas say, so judgments (small rows) still save and the Pi still boots when photos fill the card."""

    per_session_bytes: int = 64 * 1024 * 1024
    per_session_files: int = 300
    total_bytes: int = 4 * 1024 ** 3
    reserve_bytes: int = 256 * 1024 * 1024

FEEDBACK_FIELDS = ("session", "tester_lang", "mode", "lang", "query_text", "query_image", "result", "result_image",
                   "rank", "score", "correct", "appropriate", "better_caption", "model", "precision", "backend",
                   "on_phone")


_SQLITE_FULL = 13  # "database or disk is full"


def _why(e: OSError) -> str:
    """Why a photo write failed, for the phone: the cause, never the server's paths."""
    if e.errno in FULL_ERRNOS:
        return "the server's disk is full"
    return os.strerror(e.errno) if e.errno else type(e).__name__


def _refuse_if_full(e: sqlite3.OperationalError, what: str) -> None:
    """A write SQLite could not make because the card is full becomes a refusal the phone is shown."""
    if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL or "full" in str(e).lower():
        raise StorageRefused(f"{what} was not saved: the server's disk is full (free space on it)") from None


class FeedbackDB:
    """One connection shared by the server's threads behind a lock: writes are few and small, and one
    writer never meets ``database is locked``."""

    def __init__(self, path: str | os.PathLike, uploads_dir: str | os.PathLike | None = None,
                 quota: UploadQuota = UploadQuota()):
        self.path, self.quota = Path(path), quota
        self._upload_lock = threading.Lock()  # quota check, write and row of one upload happen together
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.uploads_dir = Path(uploads_dir) if uploads_dir else self.path.with_name(self.path.stem + ".uploads")
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10.0)
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._conn:
                self._conn.executescript(_SCHEMA)
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                for table, column, decl in _ADDED_COLUMNS:
                    if column not in {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}:
                        self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                self._backfill_sizes()
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: not a feedback database ({e})") from None
        if mode.lower() != "wal":  # e.g. a network filesystem: say so rather than silently lose durability
            raise DataError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the database on local disk")
        version = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        if int(version) != SCHEMA_VERSION:
            raise DataError(f"{self.path}: feedback schema {version}, this lugha reads {SCHEMA_VERSION}")

    def _backfill_sizes(self) -> None:
        """Photos stored before uploads.bytes existed count against the quotas at their size on disk."""
        for sha, name in self._conn.execute("SELECT sha256, file FROM uploads WHERE bytes IS NULL").fetchall():
            try:
                size = (self.uploads_dir / name).stat().st_size
            except OSError:
                size = 0
            self._conn.execute("UPDATE uploads SET bytes=? WHERE sha256=?", (size, sha))

    @classmethod
    def open_existing(cls, path: str | os.PathLike) -> "FeedbackDB":
        """For export/report: never create an empty database by mistyping a path."""
        if not Path(path).is_file():
            raise DataError(f"{path}: no feedback database here (start `lugha serve --db {path}` first)")
        return cls(path)

    def secret(self, name: str) -> bytes:
        """A random key made once and kept in the database (e.g. the one session ids are signed with)."""
        with self._lock, self._conn:
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (f"secret:{name}", secrets.token_hex(32)))
            return bytes.fromhex(self._conn.execute("SELECT value FROM meta WHERE key=?", (f"secret:{name}",))
                                 .fetchone()[0])

    # -- consent -------------------------------------------------------------------------------------
    def record_consent(self, session: str, tester_lang: str) -> None:
        try:
            with self._lock, self._conn:
                self._conn.execute("INSERT OR REPLACE INTO consent VALUES (?, ?, ?, ?)",
                                   (session, tester_lang, CONSENT_VERSION, time.time()))
        except sqlite3.OperationalError as e:
            _refuse_if_full(e, "the consent")
            raise

    def consent(self, session: str | None) -> str | None:
        """The tester language a session consented with, or None (no consent: nothing may be stored)."""
        if not session:
            return None
        with self._lock:
            row = self._conn.execute("SELECT tester_lang FROM consent WHERE session=?", (session,)).fetchone()
        return row[0] if row else None

    # -- uploads ---------------------------------------------------------------------------------------
    def save_upload(self, session: str, data: bytes, ext: str, width: int, height: int) -> str:
        """Store a consented photo (content-addressed) and return its SHA-256; :class:`StorageRefused`
        (nothing written) when a quota or the disk's reserve would be broken."""
        sha = hashlib.sha256(data).hexdigest()
        name = f"{sha}.{ext}"
        final = self.uploads_dir / name
        try:
            self.uploads_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageRefused(f"the photo was not stored: {_why(e)}") from None
        with self._upload_lock:
            if self.upload_path(sha) is None:  # a photo already stored costs nothing more
                self._check_quota(session, len(data))
            written = not final.exists()
            if written:
                try:  # unique temp name, fsync of file and folder; on failure the temp file is gone
                    atomic_write_bytes(final, data)
                except OSError as e:  # the disk filled up between the check and the write
                    raise StorageRefused(f"the photo was not stored: {_why(e)}") from None
            try:
                with self._lock, self._conn:
                    self._conn.execute("INSERT OR IGNORE INTO uploads (sha256, file, width, height, session, "
                                       "created, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                       (sha, name, width, height, session, time.time(), len(data)))
            except sqlite3.OperationalError as e:  # no row names the photo: it must not linger unaccounted
                if written:
                    final.unlink(missing_ok=True)
                _refuse_if_full(e, "the photo")
                raise
        return sha

    def upload_usage(self, session: str | None = None) -> tuple[int, int]:
        """(photos, bytes) stored for ``session``, or for everyone."""
        where, args = ("WHERE session=?", (session,)) if session is not None else ("", ())
        with self._lock:
            n, total = self._conn.execute(f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM uploads {where}",
                                          args).fetchone()
        return int(n), int(total)

    def _check_quota(self, session: str, size: int) -> None:
        q = self.quota
        files, used = self.upload_usage(session)
        if files + 1 > q.per_session_files or used + size > q.per_session_bytes:
            raise StorageRefused(f"this tester's photo quota is used up ({files} photos, {used / 1e6:.1f} MB of "
                                 f"{q.per_session_bytes / 1e6:.0f} MB): judgments of stored photos still save")
        _, everyone = self.upload_usage()
        if everyone + size > q.total_bytes:
            raise StorageRefused(f"the photo store is full ({everyone / 1e6:.0f} MB of {q.total_bytes / 1e6:.0f} MB):"
                                 " no more photos are kept; judgments still save")
        free = shutil.disk_usage(self.uploads_dir).free
        if free - size < q.reserve_bytes:
            raise StorageRefused(f"the disk is nearly full ({free / 1e6:.0f} MB free, {q.reserve_bytes / 1e6:.0f} MB "
                                 "kept for judgments): no more photos are kept")

    def upload_path(self, sha: str) -> Path | None:
        with self._lock:
            row = self._conn.execute("SELECT file FROM uploads WHERE sha256=?", (sha,)).fetchone()
        return self.uploads_dir / row[0] if row else None

    # -- judgments -------------------------------------------------------------------------------------
    def add_feedback(self, **fields: Any) -> int:
        """Insert one judgment; returns its id once it is durable (the acknowledgement)."""
        unknown = sorted(set(fields) - set(FEEDBACK_FIELDS))
        if unknown:
            raise DataError(f"feedback: unknown field(s) {unknown}")
        cols = ["created", *fields]
        values = [time.time(), *fields.values()]
        sql = f"INSERT INTO feedback ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        try:
            with self._lock, self._conn:
                return int(self._conn.execute(sql, values).lastrowid)
        except sqlite3.IntegrityError as e:
            raise DataError(f"feedback: rejected by the database ({e})") from None
        except sqlite3.OperationalError as e:
            _refuse_if_full(e, "the judgment")
            raise

    def feedback_rows(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute("SELECT * FROM feedback ORDER BY id")
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        for row in rows:
            yield dict(zip(names, row))

    def counts(self) -> dict[str, int]:
        with self._lock:
            q = lambda sql: int(self._conn.execute(sql).fetchone()[0])  # noqa: E731
            return {"feedback": q("SELECT COUNT(*) FROM feedback"), "consents": q("SELECT COUNT(*) FROM consent"),
                    "uploads": q("SELECT COUNT(*) FROM uploads"),
                    "to_review": q(f"SELECT COUNT(*) FROM feedback WHERE {_REVIEWABLE}")}

    # -- review: what a person checked before it may become training data ------------------------------
    def review_queue(self, limit: int = 100) -> list[dict[str, Any]]:
        """Unreviewed judgments that export would turn into training rows, oldest first."""
        with self._lock:
            cur = self._conn.execute(f"SELECT * FROM feedback WHERE {_REVIEWABLE} ORDER BY id LIMIT ?", (limit,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def set_review(self, ids: list[int], approve: bool) -> int:
        """Approve (export may use them) or reject (never exported) judgments; returns how many changed."""
        with self._lock, self._conn:
            return sum(self._conn.execute("UPDATE feedback SET review=?, reviewed=? WHERE id=?",
                                          (int(approve), time.time(), i)).rowcount for i in ids)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "FeedbackDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["FeedbackDB", "UploadQuota", "StorageRefused", "FEEDBACK_FIELDS", "SCHEMA_VERSION", "CONSENT_VERSION"]

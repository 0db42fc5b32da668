"""The inbox: Excel/CSV exports a clerk drops when the API is down.

Each file is parsed, normalised, checked and loaded exactly like API data. A file already loaded
(same content hash) is not loaded twice. Processed files move to ``processed/``; unreadable ones
to ``failed/`` with a sidecar ``<name>.error.txt`` that says why. The rows commit first, then the
file's hash, then the move: a crash in between leaves the file in the inbox and the next pass
loads it again, which changes nothing (loads are idempotent upserts) and then records and moves it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.normalize import now_local
from tasks.pipeline import ingest_records
from tasks.settings import Settings

log = logging.getLogger(__name__)

SUFFIXES = {".xlsx", ".xlsm", ".csv", ".xls"}  # .xls: not readable, but moved to failed/ with the reason


@dataclass
class FileOutcome:
    path: str
    status: str  # loaded, duplicate, failed
    entity: str | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    message: str = ""
    unknown_columns: list[str] = field(default_factory=list)


def inbox_files(inbox: Path) -> list[Path]:
    if not inbox.exists():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), target)
    return target


def already_loaded(engine: Engine, content_hash: str) -> bool:
    with engine.connect() as c:
        return c.execute(
            sa.text("SELECT 1 FROM dq.file_loads WHERE content_hash = :h"), {"h": content_hash}
        ).first() is not None


def ingest_file(
    engine: Engine, path: Path, *, settings: Settings, run_id: str, move_to: Path | None = None,
) -> FileOutcome:
    """Parse and load one file. ``move_to``: the inbox folder whose processed/ and failed/
    subfolders receive the file afterwards (None: leave the file where it is)."""
    from tasks.source_files import FileFormatError, content_hash, parse_file

    digest = content_hash(path)
    if already_loaded(engine, digest):
        out = FileOutcome(str(path), "duplicate", message="already loaded (same content)")
        if move_to is not None:
            _move(path, move_to / "processed")
        return out
    try:
        parsed = parse_file(path)
    except FileFormatError as exc:
        out = FileOutcome(str(path), "failed", message=str(exc))
        if move_to is not None:
            moved = _move(path, move_to / "failed")
            moved.with_name(moved.name + ".error.txt").write_text(
                f"{now_local():%Y-%m-%d %H:%M:%S} run {run_id}\n{exc}\n", encoding="utf-8"
            )
        log.error("%s: %s", path.name, exc)
        return out
    res = ingest_records(
        engine, parsed.entity, parsed.records, settings=settings, run_id=run_id, origin=f"file:{path.name}"
    )
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO dq.file_loads (content_hash, file_name, entity, source, rows_read, rows_loaded, "
                "rows_quarantined, run_id, loaded_at) VALUES (:h, :f, :e, :s, :r, :l, :q, :run, :t) "
                "ON CONFLICT (content_hash) DO NOTHING"
            ),
            {"h": digest, "f": path.name, "e": parsed.entity, "s": settings.source_name, "r": res.rows_read,
             "l": res.rows_loaded, "q": res.rows_quarantined, "run": run_id, "t": now_local()},
        )
    if move_to is not None:
        _move(path, move_to / "processed")
    if parsed.unknown_columns:
        log.warning("%s: unknown columns ignored: %s", path.name, ", ".join(parsed.unknown_columns))
    return FileOutcome(
        str(path), "loaded", parsed.entity, res.rows_read, res.rows_loaded, res.rows_quarantined,
        unknown_columns=list(parsed.unknown_columns),
    )


def process_inbox(engine: Engine, settings: Settings, run_id: str) -> list[FileOutcome]:
    """Every file waiting in ``DVC_INBOX_DIR``, oldest name first."""
    inbox = Path(settings.inbox_dir)
    return [ingest_file(engine, p, settings=settings, run_id=run_id, move_to=inbox) for p in inbox_files(inbox)]

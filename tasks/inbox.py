"""The inbox: Excel/CSV exports a clerk drops when the API is down.

Accepted: .xlsx/.xlsm, Excel 97-2003 .xls, an HTML table saved as .xls, and CSV in UTF-8,
UTF-16 or Windows-1258 (``tasks.source_files``; the format is told by content, not by name).

Each file is parsed, normalised, checked and loaded exactly like API data. A file already loaded
(same content hash) is not loaded twice. Processed files move to ``processed/``; unreadable ones
to ``failed/`` with a sidecar ``<name>.error.txt`` that says why. The rows commit first, then the
file's hash, then the move: a crash in between leaves the file in the inbox and the next pass
loads it again, which changes nothing (loads are idempotent upserts) and then records and moves it.

A bad file never blocks the inbox (issue 14): every error while reading a file (damaged zip,
malformed XML in any part, a DTD, an unknown encoding, a limit passed, the parser's memory or time
limit) sends that file to ``failed/`` with its reason and the next file goes on. Files are parsed
in a child process (``tasks.file_guard``). A symbolic link in the inbox is refused: moved (the
link itself, never its target) to ``failed/`` without being read. ``processed/`` and ``failed/``
are created 0700, moved files made 0600 (personal data at rest), and the ``.error.txt`` notes are
written 0600 with ``O_NOFOLLOW | O_EXCL``. File names are quoted in logs and messages when they
hold newlines or control characters (``tasks.file_formats.quote_name``).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.clock import now_local
from tasks.file_formats import FileFormatError, quote_name
from tasks.pipeline import ingest_records
from tasks.settings import Settings

log = logging.getLogger(__name__)

SUFFIXES = {".xlsx", ".xlsm", ".csv", ".xls"}  # .xls: a BIFF workbook or an HTML table, told by content


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


class InboxError(Exception):
    """The inbox's processed/ or failed/ is not a private folder we can use (a link, a file)."""


def inbox_files(inbox: Path) -> list[Path]:
    """The exports waiting in ``inbox``, oldest name first: regular files, and symbolic links
    (listed to be refused, never followed) with an export's suffix."""
    if not inbox.exists():
        return []
    with os.scandir(inbox) as entries:
        return sorted(
            Path(e.path) for e in entries
            if Path(e.name).suffix.lower() in SUFFIXES and (e.is_symlink() or e.is_file(follow_symlinks=False))
        )


def private_dir(folder: Path) -> Path:
    """``folder``, created 0700 if missing, tightened to 0700 if not; a link or a non-folder there
    is refused (:class:`InboxError`): files are never moved through a link."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise InboxError(f"{quote_name(folder)} is a link or not a folder: refused (files are never moved through "
                         "a link); make it a plain folder")
    if stat.S_IMODE(info.st_mode) != 0o700:
        try:
            os.chmod(folder, 0o700)
        except OSError as exc:  # a folder made by another account: say so, keep going
            log.warning("%s: cannot make it owner-only (%s)", quote_name(folder), exc.strerror)
    return folder


def _move(path: Path, folder: Path, note: str | None = None) -> Path:
    """Move ``path`` (a link itself, never its target) into ``folder`` under a free name, make it
    0600, and write ``note`` beside it as ``<name>.error.txt`` (0600, never through a link)."""
    from tasks.file_guard import write_private_new

    private_dir(folder)
    for n in itertools.count():
        target = folder / (path.name if n == 0 else f"{path.stem}.{n}{path.suffix}")
        sidecar = target.with_name(target.name + ".error.txt")
        if not os.path.lexists(target) and not (note is not None and os.path.lexists(sidecar)):
            break
    try:
        os.rename(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV or os.path.islink(path):
            raise
        shutil.move(str(path), target)  # another file system: copy, then remove
    if not os.path.islink(target):
        try:
            os.chmod(target, 0o600)
        except OSError as exc:  # a clerk's file owned by another account
            log.warning("%s: cannot make it private (%s)", quote_name(target), exc.strerror)
    if note is not None:
        try:
            write_private_new(sidecar, note)
        except OSError as exc:
            log.error("%s: cannot write the note %s (%s)", quote_name(target), quote_name(sidecar.name), exc)
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
    subfolders receive the file afterwards (None: leave the file where it is). From an inbox
    (``move_to`` set) a symbolic link is refused, never followed; a file named on the command line
    may be a link. Reading errors of any kind end as a ``failed`` outcome with the reason."""
    from tasks.file_guard import parse_in_child, read_file

    try:
        data = read_file(path, settings, follow_symlinks=move_to is None)
        digest = hashlib.sha256(data).hexdigest()
        if already_loaded(engine, digest):
            out = FileOutcome(str(path), "duplicate", message="already loaded (same content)")
            if move_to is not None:
                _move(path, move_to / "processed")
            return out
        parsed = parse_in_child(path, data, settings)
    except FileFormatError as exc:
        return _failed(path, exc, move_to, run_id)
    del data
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
        log.warning("%s: unknown columns ignored: %s", quote_name(path.name), ", ".join(parsed.unknown_columns))
    return FileOutcome(
        str(path), "loaded", parsed.entity, res.rows_read, res.rows_loaded, res.rows_quarantined,
        unknown_columns=list(parsed.unknown_columns),
    )


def _failed(path: Path, exc: FileFormatError, move_to: Path | None, run_id: str) -> FileOutcome:
    out = FileOutcome(str(path), "failed", message=str(exc))
    if move_to is not None:
        _move(path, move_to / "failed", note=f"{now_local():%Y-%m-%d %H:%M:%S} run {run_id}\n{exc}\n")
    log.error("%s", exc)
    return out


def process_inbox(engine: Engine, settings: Settings, run_id: str) -> list[FileOutcome]:
    """Every file waiting in ``DVC_INBOX_DIR``, oldest name first; a file that cannot be read goes
    to failed/ and the next one goes on."""
    inbox = Path(settings.inbox_dir)
    files = inbox_files(inbox)
    if files:  # before anything loads: both folders private and usable
        private_dir(inbox / "processed")
        private_dir(inbox / "failed")
    return [ingest_file(engine, p, settings=settings, run_id=run_id, move_to=inbox) for p in files]

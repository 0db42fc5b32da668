"""A clerk's file is parsed in a child process with a memory and a time limit (issue 14).

A hostile or merely huge file must never take the run down with it: the parent reads the file
once (never following a link when asked, refusing anything but a regular file and anything over
``DVC_FILE_MAX_BYTES``), then hands its bytes to ``python -m tasks.file_guard`` on stdin. The
child sets its own limits before it imports the parser:

- ``RLIMIT_AS`` = ``DVC_FILE_PARSE_MEMORY_MB`` (address space: a zip bomb or a 16,384-column row
  ends in ``MemoryError`` or a killed child, never in an out-of-memory worker);
- ``RLIMIT_CPU`` = ``DVC_FILE_PARSE_TIMEOUT`` (plus the parent's wall-clock timeout, after which
  the parent kills the child);

parses with :func:`tasks.source_files.parse_bytes` under :class:`~tasks.file_formats.FileLimits`
from the settings, and writes the result as JSON on stdout (no pickle: the parent never runs
code chosen by the file). Whatever happens in the child (an error, ``MemoryError``, a signal, a
timeout, garbage on stdout) the parent raises :class:`~tasks.file_formats.FileFormatError` with a
reason naming the limit, so the inbox moves that file to ``failed/`` and goes on. Every format
(.xlsx, .xls, HTML, CSV in any encoding) is parsed there, under the same limits.

Also here: :func:`write_private_new`, which writes a new file without following links
(``O_NOFOLLOW | O_EXCL | O_CREAT``, mode 0600): the inbox's ``.error.txt`` notes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tasks.file_formats import FileFormatError, FileLimits, quote_name, read_limited
from tasks.source_files import ParsedFile

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_STDERR_TAIL = 400


def limits_of(settings: Any) -> FileLimits:
    return FileLimits.from_settings(settings)


def read_file(path: Path, settings: Any, *, follow_symlinks: bool = True) -> bytes:
    """The file's bytes, read once (see :func:`tasks.file_formats.read_limited`)."""
    return read_limited(path, limits_of(settings), follow_symlinks=follow_symlinks)


def parse_in_child(path: Path, data: bytes, settings: Any) -> ParsedFile:
    """Parse ``data`` (the bytes of ``path``) in a child process under the settings' limits.
    Raises :class:`FileFormatError` with the reason when the file cannot be read."""
    limits = limits_of(settings)
    params = {
        "path": str(path),
        "limits": asdict(limits),
        "memory_mb": int(settings.file_parse_memory_mb),
        "cpu_seconds": max(1, int(settings.file_parse_timeout + 0.999)),
    }
    env = dict(os.environ, OPENPYXL_DEFUSEDXML="True", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONIOENCODING="utf-8", PYTHONPATH=os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own module, arguments as a list
            [sys.executable, "-m", "tasks.file_guard", json.dumps(params)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PACKAGE_ROOT, env=env,
        )
    except OSError as exc:
        raise FileFormatError(path, f"cannot start the parser process ({exc})") from None
    try:
        out, err = proc.communicate(data, timeout=settings.file_parse_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise FileFormatError(path, f"refused: parsing took longer than {settings.file_parse_timeout:g} s "
                                    "(DVC_FILE_PARSE_TIMEOUT); the parser process was stopped") from None
    return _result(path, proc.returncode, out, err, settings)


def _result(path: Path, code: int, out: bytes, err: bytes, settings: Any) -> ParsedFile:
    result = None
    for text in (out, out.rsplit(b"\n", 1)[-1]) if out else ():
        try:
            result = json.loads(text)
            break
        except ValueError:
            continue
    if isinstance(result, dict) and result.get("ok") is True:
        return _parsed_from_json(path, result["parsed"])
    if isinstance(result, dict) and result.get("memory"):
        raise FileFormatError(path, _memory_reason(settings))
    if isinstance(result, dict) and isinstance(result.get("message"), str):
        raise FileFormatError(path, result["message"])
    if code < 0:
        name = _signal_name(-code)
        if -code == getattr(signal, "SIGXCPU", -1):
            why = f"used more than {settings.file_parse_timeout:g} s of CPU (DVC_FILE_PARSE_TIMEOUT)"
        else:
            why = f"was killed by {name}: most likely over its memory limit ({_memory_reason(settings)})"
        raise FileFormatError(path, f"refused: the parser process {why}")
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    if "MemoryError" in tail[0]:
        raise FileFormatError(path, _memory_reason(settings))
    raise FileFormatError(path, f"the parser process failed (exit code {code}): {tail[0][:_STDERR_TAIL]}")


def _memory_reason(settings: Any) -> str:
    return (f"refused: parsing needs more than {settings.file_parse_memory_mb:,} MiB of memory "
            "(DVC_FILE_PARSE_MEMORY_MB)")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _parsed_from_json(path: Path, d: dict[str, Any]) -> ParsedFile:
    return ParsedFile(
        path=path, entity=d["entity"], records=d["records"], sheet=d["sheet"], header_row=d["header_row"],
        header_rows=d["header_rows"], columns=d["columns"], unknown_columns=d["unknown_columns"],
        warnings=d["warnings"], skipped=d["skipped"], delimiter=d["delimiter"], format=d.get("format", ""),
        encoding=d.get("encoding"),
    )


def write_private_new(path: Path, text: str) -> None:
    """Write ``text`` to a new file ``path``, mode 0600, never through a link: ``O_NOFOLLOW``
    refuses a link planted at ``path``, ``O_EXCL`` any existing file (``FileExistsError``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


# --- the child ----------------------------------------------------------------------------------


def _limit_self(memory_mb: int, cpu_seconds: int) -> None:
    import resource

    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


def _answer(result: dict[str, Any]) -> None:
    """An error answer, on a line of its own: it follows anything half-written to stdout (JSON
    escapes every newline inside, so the parent reads the last line)."""
    sys.stdout.write("\n" + json.dumps(result))


def _child(argv: list[str]) -> int:
    params = json.loads(argv[0])
    _limit_self(params["memory_mb"], params["cpu_seconds"])
    path = Path(params["path"])
    try:
        data = sys.stdin.buffer.read()
        from tasks.source_files import parse_bytes

        parsed = parse_bytes(path, data, FileLimits(**params["limits"]))
        del data
        fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed) if f.name != "path"}
        json.dump({"ok": True, "parsed": fields}, sys.stdout, ensure_ascii=False)  # streamed, no copy
    except FileFormatError as exc:
        _answer({"ok": False, "message": exc.message})
    except MemoryError:
        _answer({"ok": False, "memory": True})
    except Exception as exc:  # noqa: BLE001 - any other failure is this file's, with its reason
        _answer({"ok": False, "message": f"not a readable file ({type(exc).__name__}: "
                                         f"{' '.join(str(exc).split())[:300]})"})
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))


__all__ = ["limits_of", "parse_in_child", "quote_name", "read_file", "write_private_new"]

"""The run's worker processes: how they start and how they talk (framed pickles over pipes).

A worker is a fresh interpreter started as ``python -m <module>`` (:func:`start_worker`: no
re-import of the caller's main module, unlike multiprocessing's spawn), with the caller's import
path. Requests go to its standard input and answers come back on its standard output, each one
pickled and framed by its length (:func:`write_message`, :func:`read_message`; a worker's
answers: :func:`dump_answer`). In the worker,
:func:`worker_pipes` takes fd 1 for the answers and points fd 1 at stderr, so nothing a library
prints can corrupt them, and leaves Ctrl-C to the run (which closes the pipe: the worker exits).

Users: :mod:`tasks.normalize_pool` (the normaliser's chunks), :mod:`tasks.gx_host` (Great
Expectations' record).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
from typing import BinaryIO

HEADER = struct.Struct("!Q")  # the length of each pickled message
#: What a pipe to or from a worker holds (Linux's default: 64 KiB). A chunk's pages and its answer
#: are tens of MiB each way: a wider pipe moves them in 16x fewer reads and writes, each a switch
#: between the processes (1 GB through a pipe: 0.6-1.9 CPU-seconds at 64 KiB, 0.7 at 1 MiB).
PIPE_BYTES = 1 << 20


def start_worker(module: str) -> subprocess.Popen:
    """``python -m module`` with this process's import path and environment, its stdin and stdout
    piped (requests, answers), its stderr this process's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            close_fds=True)
    for pipe in (proc.stdin, proc.stdout):
        _widen(pipe)
    return proc


def _widen(pipe: BinaryIO | None) -> None:
    """Make ``pipe`` hold :data:`PIPE_BYTES` where the system allows it (Linux); else leave it."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size or the user's pipe budget: the default size


def write_message(pipe: BinaryIO, data: bytes) -> None:
    pipe.write(HEADER.pack(len(data)))
    pipe.write(data)
    pipe.flush()


def dump_answer(answer: tuple) -> bytes:
    """A worker's answer ``(kind, value, *rest)`` pickled; a value that does not pickle (an error
    carrying what cannot cross) goes as ``("error", RuntimeError(its text), *rest)``."""
    try:
        return pickle.dumps(answer, protocol=5)
    except Exception as exc:  # noqa: BLE001 - its text is what the run can still be told
        return pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), *answer[2:]), protocol=5)


def read_message(pipe: BinaryIO) -> bytes | None:
    """The next message, or None at the end of the pipe (or a message cut short)."""
    header = pipe.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = pipe.read(size)
    return data if len(data) == size else None


def worker_pipes() -> tuple[BinaryIO, BinaryIO]:
    """In a worker: (requests, answers). SIGINT ignored (Ctrl-C is the run's to handle); fd 1 goes
    to stderr, the answers to a duplicate of the original fd 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return sys.stdin.buffer, answers

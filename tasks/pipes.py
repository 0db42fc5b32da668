"""The run's worker processes: how they start and how they talk (framed pickles over pipes).

A worker is a fresh interpreter started as ``python -m <module>`` (:func:`start_worker`: no
re-import of the caller's main module, unlike multiprocessing's spawn), with the caller's import
path. Requests go to its standard input and answers come back on its standard output, each one
pickled (protocol 5, large buffers out of band: :func:`dumps`, :func:`loads`) and framed by its
lengths (:func:`write_message`, :func:`read_message`; a worker's answers: :func:`dump_answer`).
Out of band, the Arrow and NumPy buffers of an answer (a chunk's frames, most of its bytes) are
written to the pipe from where they are, instead of being copied into the pickle
first, and read into buffers the unpickled frames then use as they are. In the worker,
:func:`worker_pipes` takes fd 1 for the answers and points fd 1 at stderr, so nothing a library
prints can corrupt them, and leaves Ctrl-C to the run (which closes the pipe: the worker exits).

Users: :mod:`tasks.normalize_pool` (the normaliser's chunks), :mod:`tasks.gx_host` (Great
Expectations' record).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

HEADER = struct.Struct("!Q")  # the length of a pickle, or of one of its out-of-band buffers
FRAME = struct.Struct("!QI")  # a message: its pickle's length, and how many buffers follow it
#: A message: a pickle, and the out-of-band buffers it refers to (in order).
Message = tuple[bytes, Sequence[Any]]
#: What a pipe to or from a worker holds (Linux's default: 64 KiB). A chunk's pages and its answer
#: are tens of MiB each way: a wider pipe moves them in 16x fewer reads and writes, each a switch
#: between the processes (measured in ``bench/README.md``).
PIPE_BYTES = 1 << 20


def start_worker(module: str) -> subprocess.Popen:
    """``python -m module`` with this process's import path and environment (one OpenBLAS thread,
    unless set), its stdin and stdout piped (requests, answers), its stderr this process's."""
    env = dict(os.environ)
    # a worker computes on one core: no OpenBLAS threads spinning beside it (NumPy starts one per
    # core at import, and they burn CPU the run's busy cores need)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            close_fds=True)
    for pipe in (proc.stdin, proc.stdout):
        _widen(pipe)
    return proc


def running_pid(proc: subprocess.Popen | None) -> int | None:
    """The process id of a worker :func:`start_worker` started, while it runs; None when there is
    none or it has ended."""
    return None if proc is None or proc.poll() is not None else proc.pid


def _widen(pipe: BinaryIO | None) -> None:
    """Make ``pipe`` hold :data:`PIPE_BYTES` where the system allows it (Linux); else leave it."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size or the user's pipe budget: the default size


def dumps(obj: Any) -> Message:
    """``obj`` pickled (protocol 5), its large buffers (Arrow's, NumPy's) left out of band."""
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(obj, protocol=5, buffer_callback=buffers.append), buffers


def loads(message: Message) -> Any:
    data, buffers = message
    return pickle.loads(data, buffers=buffers)


def write_message(pipe: BinaryIO, message: Message) -> None:
    """Write a :data:`Message` (:func:`dumps`), framed."""
    data, buffers = message
    views = [b.raw() if isinstance(b, pickle.PickleBuffer) else memoryview(b).cast("B") for b in buffers]
    pipe.write(FRAME.pack(len(data), len(views)) + b"".join(HEADER.pack(v.nbytes) for v in views))
    pipe.write(data)
    for view in views:
        pipe.write(view)
    pipe.flush()


def dump_answer(answer: tuple) -> Message:
    """A worker's answer ``(kind, value, *rest)`` pickled (:func:`dumps`); a value that does not
    pickle (an error carrying what cannot cross) goes as ``("error", RuntimeError(its text), *rest)``."""
    try:
        return dumps(answer)
    except Exception as exc:  # noqa: BLE001 - its text is what the run can still be told
        return dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), *answer[2:]))


def read_message(pipe: BinaryIO) -> Message | None:
    """The next message, or None at the end of the pipe (or a message cut short)."""
    frame = pipe.read(FRAME.size)
    if len(frame) < FRAME.size:
        return None
    size, count = FRAME.unpack(frame)
    sizes = pipe.read(HEADER.size * count)
    if len(sizes) < HEADER.size * count:
        return None
    data = pipe.read(size)
    if len(data) < size:
        return None
    buffers = []
    for (n,) in HEADER.iter_unpack(sizes):
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = pipe.readinto(view[got:])  # type: ignore[attr-defined]
            if not k:
                return None
            got += k
        buffers.append(buf)
    return data, buffers


def waiting(pipe: BinaryIO) -> bool:
    """Whether the next message (or the pipe's end) has been sent already: something to read at
    once. Bytes the pipe's reader has buffered are not seen (a small next message read ahead with
    the last one): such a pipe answers False."""
    return bool(select.select([pipe], [], [], 0)[0])


def worker_pipes() -> tuple[BinaryIO, BinaryIO]:
    """In a worker: (requests, answers). SIGINT ignored (Ctrl-C is the run's to handle); fd 1 goes
    to stderr, the answers to a duplicate of the original fd 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return sys.stdin.buffer, answers


def serve_then_exit(serve: Callable[[], None]) -> None:
    """A worker's main: ``serve()`` until the run closes the pipe, then end the process without
    tearing the interpreter down. The run waits for its workers to exit, and freeing their
    hundreds of MiB of objects one by one held up the nightly (``bench/README.md``); nothing is
    left to hand back once the run has closed the pipe. An error of ``serve`` ends the process
    as Python would (its traceback on stderr)."""
    serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

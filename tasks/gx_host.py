"""Great Expectations' record validated in a worker process, off the run's interpreter lock.

GX is Python: importing it takes ~3-4 s of CPU and every validation more, in the run's process
where the checks, the reading of pages and the loads wait for the same interpreter lock (at 200k
dossiers, a full load ran 15 % faster with GX's validations left out). The run's GX thread
(:mod:`tasks.gx`) therefore hands each batch to one worker process, the **GX host** (``python -m
tasks.gx_host``, started when first needed, or early by :func:`start`), and waits for its answer,
which costs the run's process nothing but the pickling of the batch's GX columns.

The host runs what it is sent: a module-level function (pickled by name, imported in the host) and
its arguments; its value or its error comes back, with the log records written meanwhile
(re-logged in the run's process under their own logger's name). :mod:`tasks.gx` sends its
tallies' work there: the host keeps a mirror :class:`~tasks.gx.GxTally` of every entity of every
run it validates, validates the batches in the order they come, adds GX's results up, stores them
and writes the data docs, exactly as the tally would in the run's process.

The host never fails a run: a host that dies (killed, out of memory) fails the request in hand,
which the tally logs and counts as GX's failure (``chunks_failed``), with the batches that host had
validated (their results died with it), and the next request starts a new host.
"""

from __future__ import annotations

import atexit
import gc
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from tasks.pipes import (
    dump_answer,
    dumps,
    loads,
    read_message,
    running_pid,
    serve_then_exit,
    start_worker,
    worker_pipes,
    write_message,
)

log = logging.getLogger(__name__)


class GxHostDied(RuntimeError):
    """The GX host process ended while a request was in hand."""


class GxHost:
    """The run's side of the host: synchronous requests, one at a time (the GX thread's)."""

    def __init__(self) -> None:
        self._proc: Any = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The host's process id while it runs (started, not stopped, not ended), else None."""
        return running_pid(self._proc)

    def start(self) -> None:
        """Start the host if it is not running (it imports GX at once, while the run goes on)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Any:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = start_worker("tasks.gx_host")
        return self._proc

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the host (``fn``: a module-level function, pickled by name) and
        return its value; its error is raised here as it is."""
        op = getattr(fn, "__qualname__", repr(fn))
        with self._lock:
            proc = self._ensure()
            try:
                write_message(proc.stdin, dumps((fn, args)))
                message = read_message(proc.stdout)
            except (BrokenPipeError, OSError, ValueError):
                message = None
            if message is None:
                self._stop(kill=True)
                raise GxHostDied(f"the Great Expectations worker process ended during {op!r} "
                                 "(killed, or out of memory?); the next request starts a new one")
        kind, value, records = loads(message)
        for name, level, text in records:
            logging.getLogger(name).log(level, "%s", text)
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        with self._lock:
            self._stop(kill=False)

    def _stop(self, *, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if kill:
                proc.kill()
            proc.stdin.close()  # the host exits at the end of its requests
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a host that does not exit is killed
            proc.kill()
            proc.wait()
        proc.stdout.close()


_HOST = GxHost()
atexit.register(_HOST.close)


def host() -> GxHost:
    """The process's GX host (one per process: the GX thread is one thread)."""
    return _HOST


def start() -> None:
    """Start the GX host now, so that GX is imported there while this process does other work."""
    _HOST.start()


# ---------------------------------------------------------------------------------------------
# In the host
# ---------------------------------------------------------------------------------------------
class _Records(logging.Handler):
    """The log records of a request, sent back with its answer."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        self.records.append((record.name, record.levelno, text))


def _serve() -> None:
    from tasks.resources import private_umask

    private_umask()  # the data docs it writes name failing values: owner-only, as the run's files
    requests, answers = worker_pipes()
    handler = _Records()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    from tasks.data_docs import preload_gx

    preload_gx()  # while the run reads its first pages
    # GX's modules and classes live as long as the host: out of the collector's way for good, so
    # the collections the validations trigger walk only what they made (gc.freeze)
    gc.freeze()
    while (message := read_message(requests)) is not None:
        handler.records = []
        try:
            fn, args = loads(message)
            del message
            answer: tuple[str, Any] = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - raised in the run
            answer = ("error", exc)
        args = None
        write_message(answers, dump_answer((*answer, handler.records)))


if __name__ == "__main__":
    serve_then_exit(_serve)

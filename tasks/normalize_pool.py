"""Normalising an extraction's chunks in a worker process, so a run uses both cores.

The normaliser (:mod:`tasks.normalize`) is Python, record by record. In the run's own process it
holds the interpreter lock while the previous chunk's checks and Great Expectations (Python too)
wait, and the second core only gets the warehouse's native load. An extraction of several chunks
hands each chunk to a worker process instead (``DVC_NORMALIZE_WORKERS``, default one; several take
the chunks in turn), and checks and loads the previous chunk while the worker normalises the next:

- the chunk goes to the worker as the page bodies the source sent (bytes, out of band: no
  pickling of a chunk's records, nor a copy of its bodies); the worker decodes them with the
  transport's own rule (:func:`tasks.http_transport.page_records`) and runs the same
  :func:`~tasks.normalize.normalize` on the same records, so its output is the in-process
  output, value for value;
- its :class:`~tasks.normalize.Normalized` comes back pickled (Arrow buffers, cheap);
- the caller takes the results in the chunks' order: what commits, and when, is unchanged.

The worker starts (a fresh interpreter: about a second of imports, overlapping the reading) only
for an extraction expected to span several chunks; a nightly's single chunk is normalised in the
run's process. ``DVC_NORMALIZE_WORKERS=0`` keeps every chunk there. An error of the normaliser is
raised in the run as it would be in-process; a worker that dies (killed, out of memory) fails the
run with a message saying so.
"""

from __future__ import annotations

import collections
import logging
import pickle
import queue
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, BinaryIO

from tasks.normalize import Normalized, normalize
from tasks.pipes import (
    dump_answer,
    dumps,
    loads,
    read_message,
    serve_then_exit,
    start_worker,
    waiting,
    worker_pipes,
    write_message,
)
from tasks.resources import gc_paused

log = logging.getLogger(__name__)

#: One part of a chunk, in reading order: a page body as the source sent it, or records already
#: decoded (a page that came without its body, e.g. from a test double).
Part = bytes | Sequence[dict]


class NormalizerWorkerDied(RuntimeError):
    """The worker process normalising the run's chunks ended abnormally."""


def chunk_records(parts: Sequence[Part]) -> list[dict]:
    """The records of a chunk's parts, in reading order (page bodies decoded as the transport does)."""
    from tasks.http_transport import page_records

    records: list[dict] = []
    for part in parts:
        records.extend(page_records(part) if isinstance(part, bytes | bytearray | memoryview) else part)
    return records


def normalize_parts(entity: str, parts: Sequence[Part], hash_key: bytes) -> Normalized:
    """Decode a chunk's parts and normalise its records, the collector paused throughout: the
    decoded records are a chunk's millions of small dicts and strings, alive until normalised, that
    every collection would walk again (decoding a chunk of 15,000 dossiers with the collector
    running took 1.5x as long on a fresh heap, 2.8x beside earlier chunks' results, as in the
    worker; ``bench/README.md``). In the run's process the page reading pauses
    it already (:func:`tasks.resources.read_ahead`); the worker process pauses it here."""
    with gc_paused():
        return normalize(entity, chunk_records(parts), hash_key=hash_key)


class _Worker:
    """One worker process (``python -m tasks.normalize_pool``, :func:`tasks.pipes.start_worker`)
    and two threads that write its requests and read its answers, in order, into futures; neither
    side can block the other on a full pipe."""

    def __init__(self, entity: str) -> None:
        self.entity = entity
        self.proc = start_worker("tasks.normalize_pool")
        self._requests: queue.Queue[bytes | None] = queue.Queue()
        self._waiting: collections.deque[Future[Normalized]] = collections.deque()
        self._lock = threading.Lock()
        self._dead: str | None = None
        threading.Thread(target=self._send, name=f"normalize-send-{entity}", daemon=True).start()
        threading.Thread(target=self._receive, name=f"normalize-recv-{entity}", daemon=True).start()

    def submit(self, parts: list[Part], hash_key: bytes) -> Future[Normalized]:
        future: Future[Normalized] = Future()
        with self._lock:
            if self._dead is not None:
                future.set_exception(self._died())
                return future
            self._waiting.append(future)
        # the page bodies out of band: written to the pipe from where they are, not copied into the
        # pickle first (a chunk's bodies, copied for every chunk in the run's main thread)
        bodies = [pickle.PickleBuffer(p) if isinstance(p, bytes) else p for p in parts]
        self._requests.put(dumps((self.entity, bodies, hash_key)))
        return future

    def _send(self) -> None:
        pipe = self.proc.stdin
        assert pipe is not None
        try:
            while (data := self._requests.get()) is not None:
                write_message(pipe, data)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the worker is gone: the reader fails what waits
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def _receive(self) -> None:
        pipe = self.proc.stdout
        assert pipe is not None
        while True:
            message = read_message(pipe)
            if message is None:
                break
            with self._lock:
                future = self._waiting.popleft()
            try:
                kind, value = loads(message)
            except Exception as exc:  # noqa: BLE001 - an answer that cannot be read fails its chunk
                kind, value = "error", exc
            del message  # not held while the next answer is awaited
            if kind == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)
            del value
        with self._lock:
            self._dead = f"exit code {self.proc.wait()}"
            waiting, self._waiting = list(self._waiting), collections.deque()
        for future in waiting:
            if not future.done():
                future.set_exception(self._died())

    def _died(self) -> NormalizerWorkerDied:
        return NormalizerWorkerDied(
            f"{self.entity}: the worker process normalising the chunks ended abnormally ({self._dead}: killed, or "
            "out of memory?); nothing of the chunk it held was loaded. Rerun; DVC_NORMALIZE_WORKERS=0 normalises "
            "in the run's own process")

    def close(self, *, cancel: bool) -> None:
        self._requests.put(None)  # its stdin closes once the requests sent are written: it exits
        if cancel:
            self.proc.kill()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve() -> None:
    """The worker's main: :func:`serve_chunks` on its pipes, Arrow's buffers from the C library's
    allocator (handed back by ``malloc_trim``). Its standard output carries only the answers (fd 1
    goes to stderr)."""
    from tasks.resources import use_system_arrow_pool

    requests, answers = worker_pipes()  # Ctrl-C is the run's to handle: it closes the pipe
    use_system_arrow_pool()
    serve_chunks(requests, answers)


def serve_chunks(requests: BinaryIO, answers: BinaryIO, *, trim: Callable[[], None] | None = None) -> None:
    """Read a chunk, normalise it, write its result (or its error), until the run closes the pipe.

    What a chunk freed goes back to the OS (``trim``, default :func:`tasks.resources.release_memory`)
    only while no next chunk waits: the next chunk would take the same memory back at once, page by
    page from the kernel (the larger part of the worker's system time, ``bench/README.md``). A
    worker that outruns the run waits with its memory handed back; one that holds the run up keeps
    its heap for the next chunk (its peak is a chunk's either way)."""
    if trim is None:
        from tasks.resources import release_memory as trim
    while (message := read_message(requests)) is not None:
        entity, parts, hash_key = loads(message)
        del message
        try:
            result: tuple[str, Any] = ("ok", normalize_parts(entity, parts, hash_key))
        except Exception as exc:  # noqa: BLE001 - raised in the run, as in-process
            result = ("error", exc)
        del parts  # the chunk's bytes and records go before its answer is serialised
        answer = dump_answer(result)
        del result
        write_message(answers, answer)
        del answer
        if not waiting(requests):
            trim()


class ChunkNormalizer:
    """Normalises the chunks of one extraction, in the worker process once it is started.

    :meth:`submit` returns a future of the chunk's :class:`Normalized`: already done when the
    chunk was normalised here, pending while the worker runs. Use as a context manager: leaving it
    stops the worker (pending chunks are cancelled when leaving on an error)."""

    def __init__(self, entity: str, hash_key: bytes, *, workers: int = 1) -> None:
        self.entity = entity
        self._key = hash_key
        self._workers = max(0, workers)
        self._pool: list[_Worker] = []
        self._submitted = 0

    def wants_worker(self, expected_records: int | None, chunk_records: int) -> bool:
        """Whether an extraction of about ``expected_records`` records (None: unknown) should be
        normalised in the worker: when workers are allowed and it spans more than one chunk."""
        return self._workers > 0 and expected_records is not None and expected_records > chunk_records

    @property
    def started(self) -> bool:
        return bool(self._pool)

    @property
    def in_flight(self) -> int:
        """How many chunks may be normalising at once: one per worker (at least one)."""
        return max(1, len(self._pool))

    def submit(self, parts: Sequence[Part], *, in_worker: bool) -> Future[Normalized]:
        """Normalise one chunk: in the worker (started if need be) with ``in_worker``, else here."""
        if not in_worker or self._workers == 0:
            done: Future[Normalized] = Future()
            try:
                done.set_result(normalize_parts(self.entity, parts, self._key))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                done.set_exception(exc)
            return done
        if not self._pool:
            log.info("%s: normalising the chunks in %s", self.entity,
                     "a worker process" if self._workers == 1 else f"{self._workers} worker processes")
            self._pool = [_Worker(self.entity) for _ in range(self._workers)]
        worker = self._pool[self._submitted % len(self._pool)]  # in turn: each chunk's result is awaited in order
        self._submitted += 1
        return worker.submit(list(parts), self._key)

    def result(self, future: Future[Normalized]) -> Normalized:
        """The chunk's result; the normaliser's own error as it is, a dead worker as
        :class:`NormalizerWorkerDied`."""
        return future.result()

    def close(self, *, cancel: bool = False) -> None:
        pool, self._pool = self._pool, []
        for worker in pool:
            worker.close(cancel=cancel)

    def __enter__(self) -> ChunkNormalizer:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(cancel=exc_type is not None)


if __name__ == "__main__":
    serve_then_exit(_serve)

"""A publication's workbook written in a worker process while the run goes on.

The nightly publishes two periods (the data cut's month and the month before), each with its
workbook, and a workbook is seconds of Python (XlsxWriter) that holds the interpreter. Written one
after the other they take one core, the second one idle but for DuckDB. Handed to a
:class:`WorkbookWorker`, the first period's workbook is written in a worker process
(``python -m tasks.workbook_worker``, :func:`tasks.pipes.start_worker`) while the run publishes
the next period and writes its workbook itself; ``tasks.publishing.publish_period`` hands it over
and records it.

- The run reads the publication (:func:`tasks.workbook.read_layout`) and sends it: the worker
  never opens the warehouse (a DuckDB file has one writer process: the run).
- The worker writes the partial file the run names (:func:`tasks.workbook.partial_path`) with the
  same :func:`tasks.workbook_layout.lay_out`; the run renames it and records it
  (:func:`tasks.workbook.record_workbook`), as for a workbook written in-process, once
  :meth:`WorkbookWorker.finish` has its answer. Nothing is recorded before the file is whole.
- The worker writes one workbook at a time; a second hand-over waits for the first.
- An error of the worker's writing is raised in the run by :meth:`~WorkbookWorker.finish`, as it
  would be in-process; a worker that dies fails the run with a message saying so. A worker whose
  run has gone (killed) removes the partial file it wrote and exits.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks import pipes
from tasks.workbook_layout import Layout, lay_out


class WorkbookWorkerDied(RuntimeError):
    """The worker process writing a workbook ended abnormally."""


class WorkbookWorker:
    """Writes workbooks in one worker process, one at a time.

    Use as a context manager: entering it starts the worker (its imports overlap the caller's
    next steps instead of holding up the first hand-over, whose request would wait in the pipe);
    leaving it waits for the workbook handed over (and runs its ``done``) unless leaving on an
    error, then stops the worker."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._pending: tuple[Path, Callable[[], Any]] | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs (started, not stopped, not ended), else None."""
        return pipes.running_pid(self._proc)

    def start(self) -> None:
        """Start the worker process, if it is not running."""
        if self._proc is None:
            self._proc = pipes.start_worker("tasks.workbook_worker")

    def hand_over(self, layout: Layout, partial: Path, done: Callable[[], Any]) -> None:
        """Write ``layout`` to ``partial`` in the worker. ``done`` runs in this thread once the file
        is written, at the next :meth:`hand_over` or :meth:`finish`."""
        self.finish()
        self.start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            pipes.write_message(self._proc.stdin, pipes.dumps((layout, str(partial))))
        except (BrokenPipeError, OSError) as exc:
            raise self._died() from exc
        self._pending = (partial, done)

    @property
    def pending(self) -> bool:
        """A workbook was handed over and not yet finished."""
        return self._pending is not None

    def finish(self) -> Any:
        """Wait for the workbook handed over (if any) and run its ``done``: what ``done`` returns,
        None when nothing was handed over. Raises the worker's error."""
        if self._pending is None:
            return None
        partial, done = self._pending
        self._pending = None
        assert self._proc is not None and self._proc.stdout is not None
        message = pipes.read_message(self._proc.stdout)
        if message is None:
            partial.unlink(missing_ok=True)
            raise self._died()
        status, value = pipes.loads(message)
        if status == "error":
            partial.unlink(missing_ok=True)
            raise value
        return done()

    def _died(self) -> WorkbookWorkerDied:
        code = self._proc.wait() if self._proc is not None else None
        return WorkbookWorkerDied(f"the worker process writing a workbook ended (exit {code}): the publication's "
                                  "workbook was not written; run the nightly again (dvc-etl run) or publish the period "
                                  "again (dvc-etl report)")

    def close(self) -> None:
        """Stop the worker: it ends once its standing request (if any) is written."""
        proc, self._proc = self._proc, None
        if self._pending is not None:
            self._pending[0].unlink(missing_ok=True)
            self._pending = None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> WorkbookWorker:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.finish()
        finally:
            self.close()


def _serve() -> None:
    """The worker's loop: read a layout and a path, write the workbook there, answer, until the
    run closes the pipe."""
    from tasks.resources import private_umask

    requests, answers = pipes.worker_pipes()  # Ctrl-C is the run's to handle: it closes the pipe
    private_umask()  # the workbook names officials: owner-only, as the run's files
    while (message := pipes.read_message(requests)) is not None:
        layout, partial = pipes.loads(message)
        del message
        try:
            lay_out(layout, Path(partial))
            result: tuple[str, Any] = ("ok", None)
        except Exception as exc:  # noqa: BLE001 - raised in the run, as in-process
            result = ("error", exc)
        del layout
        try:
            pipes.write_message(answers, pipes.dump_answer(result))
        except (BrokenPipeError, OSError):  # the run has gone: nobody will rename the file
            Path(partial).unlink(missing_ok=True)
            return


if __name__ == "__main__":
    pipes.serve_then_exit(_serve)

"""Great Expectations: the record of the data-quality gate, and its data docs.

The vectorised masks of ``tasks.quality.check`` are the gate: they decide which rows are
quarantined. Great Expectations is the record, readable by humans: it validates the GX-native
rules of the suites (types ``expect_*``; not the ``dvc_expect_*`` project rules, nor the
normaliser's ``dvc_parse`` rules) on the same core-shaped rows, and its data docs show them.

What GX sees, exactly: every chunk of a run, per entity,

* in full, until the entity's rows handed to GX reach ``DVC_GX_ROW_BUDGET`` (by default more than
  a nightly run reads; 0: no budget, every row of every chunk);
* beyond the budget (a backfill, a full refresh), a deterministic sample: the rows whose record
  key hashes below ``DVC_GX_SAMPLE_FRACTION`` (:func:`sample_mask`), so a rerun samples the same
  rows.

A :class:`GxTally` follows one entity through a run. :meth:`GxTally.select` picks a chunk's rows
in the caller's thread (GX's columns only, so the chunk itself can be freed) and gathers
consecutive chunks into batches of up to :data:`BATCH_ROWS` rows, since a GX validation costs
mostly per call; a batch never holds two versions of one record, so GX's uniqueness rules count
what the masks count chunk by chunk. One background thread validates the batches
(:func:`tasks.gx_thread.submit`:
at most :data:`ROWS_IN_FLIGHT` rows waiting, so a slow GX holds the extraction back instead of
piling rows up in memory, while a nightly's few small batches never wait for GX's start) and
adds GX's results up (:mod:`tasks.gx_results`).
:meth:`GxTally.finish` stores the entity's result, builds the run's data docs (``tasks.data_docs``)
and returns what GX saw: rows and chunks validated of the rows and chunks the checks read. A test shows that GX and the masks count the
same failing rows.

The pipeline's side (``tasks.runs.EntityResult`` per entity): :func:`gx_chunk` for each checked
chunk, :func:`close_gx` when an entity's chunks are all read (its record is written in the
background), :func:`wait_gx` to wait for one entity, :func:`settle_gx` for a whole run.

``great_expectations`` is imported only when a batch is validated (the import costs seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.clock import now_local
from tasks.data_docs import (
    Coverage,
    coverage_text,
    data_docs_link,
    docs_root,
    gx_context,
    html_safe,
    record_validation,
    safe_name,
    update_index,
)
from tasks.gx_results import add_up, counts_by_rule, settle
from tasks.gx_thread import BATCH_ROWS, BATCHES_IN_FLIGHT, ROWS_IN_FLIGHT, in_gx_thread, pool, submit
from tasks.quality import load_suite, record_keys
from tasks.settings import Settings

__all__ = ["BATCHES_IN_FLIGHT", "BATCH_ROWS", "ROWS_IN_FLIGHT", "GxTally", "close_gx", "data_docs_link", "gx_chunk",
           "html_safe", "in_gx_thread", "sample_mask", "settle_gx", "settle_gx_beside", "submit", "validate_with_gx", "wait_gx"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Which rows GX sees
# ---------------------------------------------------------------------------------------------
def sample_mask(keys: pd.Series, fraction: float) -> np.ndarray:
    """The rows whose record key falls in the sample: a 53-bit hash of the key (pandas' SipHash
    with its fixed key, the same on every machine and run) below ``fraction`` of its range."""
    if fraction >= 1:
        return np.ones(len(keys), dtype=bool)
    hashed = pd.util.hash_pandas_object(keys.astype("string"), index=False).to_numpy() >> np.uint64(11)
    return hashed < np.uint64(int(fraction * 2**53))


def gx_columns(entity: str, expectations_dir: Path | None = None) -> list[str]:
    """The frame columns the GX-native rules of ``entity``'s suite read."""
    return sorted(set().union(*(r.columns() for r in load_suite(entity, expectations_dir).gx_native)))


# ---------------------------------------------------------------------------------------------
# One entity of one run
# ---------------------------------------------------------------------------------------------
@dataclass
class GxTally:
    """Great Expectations over the chunks of one entity in one run (see the module docstring)."""

    entity: str
    run_id: str
    root: Path  # the data-docs site
    keep_runs: int = 30
    coverage: Coverage = field(default_factory=Coverage)
    expectations_dir: Path | None = None
    started_at: datetime = field(default_factory=now_local)
    run_time: datetime = field(default_factory=lambda: datetime.now(UTC))  # GX's run time
    success: bool | None = None  # None until a chunk is validated
    docs_index: str | None = None
    futures: list[Future] = field(default_factory=list, repr=False)
    hand_over: Callable[[pd.DataFrame], None] | None = field(default=None, repr=False)  # validates a batch
    _batch: list[pd.DataFrame] = field(default_factory=list, repr=False)  # chunks gathered for GX
    _batch_keys: set[str] = field(default_factory=set, repr=False)
    _merged: Any = field(default=None, repr=False)  # GX's result, the chunks added up
    _stored: int = field(default=-1, repr=False)  # chunks counted when the result was last stored
    _gx: Any = field(default=None, repr=False)  # (context, batch definition, suite), made in the GX thread
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: where GX runs: None in this process, or the GX host (tasks.gx_host: a worker process that
    #: keeps a mirror of this tally, validates, stores and writes the data docs there)
    host: Any = field(default=None, repr=False)

    @classmethod
    def for_settings(cls, entity: str, run_id: str, settings: Settings) -> GxTally:
        from tasks.gx_host import host

        return cls(entity, run_id, docs_root(settings), settings.data_docs_keep_runs,
                   Coverage(row_budget=settings.gx_row_budget, sample_fraction=settings.gx_sample_fraction),
                   host=host())

    def spec(self) -> dict[str, Any]:
        """What the GX host needs to keep this tally's mirror: its identity and its counts."""
        return {"entity": self.entity, "run_id": self.run_id, "root": str(self.root), "keep_runs": self.keep_runs,
                "expectations_dir": self.expectations_dir, "started_at": self.started_at,
                "run_time": self.run_time, "coverage": asdict(self.coverage)}

    def _take_counts(self, counts: dict[str, Any]) -> None:
        for k, v in counts.items():
            setattr(self.coverage, k, v)

    @property
    def folder(self) -> Path:
        return self.root / safe_name(self.run_id)

    # -- in the caller's thread ------------------------------------------------------------------
    def select(self, frame: pd.DataFrame) -> list[pd.DataFrame]:
        """Count one checked chunk and gather the rows of it GX validates (GX's columns only);
        returns the batches ready for GX. A batch gathers consecutive chunks up to
        :data:`BATCH_ROWS` rows and never holds two versions of one record, so GX's uniqueness
        rules count what the checks count chunk by chunk; :meth:`flush` returns the last one."""
        cov, n = self.coverage, len(frame)
        keys = frame["record_key"] if "record_key" in frame else record_keys(load_suite(self.entity), frame)
        with self._lock:
            room = n if cov.row_budget <= 0 else max(0, min(n, cov.row_budget - cov.rows_in_full))
            take = np.zeros(n, dtype=bool)
            take[:room] = True
            take[room:] = sample_mask(keys.iloc[room:], cov.sample_fraction)
            cov.chunks += 1
            cov.rows_checked += n
            cov.rows_in_full += room
            cov.rows_beyond_budget += n - room
            cov.rows_sampled += int(take[room:].sum())
            if not take.any():
                return []
            cols = gx_columns(self.entity, self.expectations_dir)
            data = (frame[cols] if take.all() else frame.loc[take, cols]).reset_index(drop=True)
            chunk_keys = set(keys[take].tolist())
            ready = [self._take_batch()] if not self._batch_keys.isdisjoint(chunk_keys) else []
            self._batch.append(data)
            self._batch_keys |= chunk_keys
            if sum(map(len, self._batch)) >= BATCH_ROWS:
                ready.append(self._take_batch())
            return ready

    def flush(self) -> list[pd.DataFrame]:
        """The batch being gathered, if any (the entity's chunks are all selected)."""
        with self._lock:
            return [self._take_batch()] if self._batch else []

    def _take_batch(self) -> pd.DataFrame:
        batch = pd.concat(self._batch, ignore_index=True) if len(self._batch) > 1 else self._batch[0]
        batch.attrs["chunks"] = len(self._batch)
        self._batch, self._batch_keys = [], set()
        return batch

    def wait(self) -> None:
        """Wait for the batches (and the finish) handed to the GX thread so far."""
        for f in self.futures:
            f.result()
        self.futures.clear()

    # -- in the GX thread ------------------------------------------------------------------------
    def validate(self, data: pd.DataFrame) -> None:
        """Validate one batch (:meth:`select`) and add GX's result to the entity's (never raises:
        the chunks of a batch GX could not run on are logged and counted in ``chunks_failed``)."""
        if self.host is not None:
            from tasks.gx_host import GxHostDied

            try:
                self._take_counts(self.host.call(_host_validate, self.spec(), data))
            except Exception as exc:  # noqa: BLE001 - the record must not break the load
                log.exception("%s: Great Expectations could not validate %d rows", self.entity, len(data))
                cov = self.coverage
                cov.chunks_failed += int(data.attrs.get("chunks", 1))
                if isinstance(exc, GxHostDied):  # the results it held went with it: they count as failed
                    cov.chunks_failed += cov.chunks_validated
                    cov.chunks_validated = cov.rows_validated = 0
            return
        chunks, started = int(data.attrs.get("chunks", 1)), time.perf_counter()
        try:
            _ctx, batch_def, suite = self._context()  # GX's first import, through gx_context
            from great_expectations.validator.v1_validator import Validator

            part = Validator(batch_definition=batch_def, batch_parameters={"dataframe": html_safe(data)},
                             result_format="SUMMARY").validate_expectation_suite(suite)
        except Exception:  # noqa: BLE001 - the record must not break the load
            log.exception("%s: Great Expectations could not validate %d rows", self.entity, len(data))
            self.coverage.chunks_failed += chunks
            return
        finally:
            self.coverage.seconds += time.perf_counter() - started
        self._merged = part if self._merged is None else add_up(self._merged, part)
        self.coverage.rows_validated += len(data)
        self.coverage.chunks_validated += chunks

    def finish(self) -> dict[str, Any]:
        """Store the entity's result so far and build the run's data docs and the site's index;
        returns ``{"data_docs", "gx_success", "gx"}`` (``data_docs``: the run's page; None when no
        chunk was handed to GX, "" when GX could not run on any)."""
        return finish_all([self])[0]

    def record(self) -> dict[str, Any]:
        return {"data_docs": self.docs_index, "gx_success": self.success, "gx": self.coverage.as_dict()}

    def _context(self) -> tuple[Any, Any, Any]:
        if self._gx is None:
            from tasks.warehouse import private_dir

            private_dir(self.folder)  # data docs show failing values (personal data): 0700 folders, 0600 files
            ctx = gx_context(self.folder)  # imports GX (tasks.data_docs.defer_unused_gx_modules first)
            from great_expectations.core.expectation_suite import ExpectationSuite
            from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

            batch_def = (ctx.data_sources.add_pandas(f"{self.entity}_source").add_dataframe_asset(self.entity)
                         .add_batch_definition_whole_dataframe("batch"))
            suite = ExpectationSuite(name=self.entity, meta={"entity": self.entity, "run_id": self.run_id})
            for r in load_suite(self.entity, self.expectations_dir).gx_native:
                suite.add_expectation_configuration(ExpectationConfiguration(type=r.type, kwargs=r.kwargs,
                                                                             meta=r.meta))
            self._gx = (ctx, batch_def, ctx.suites.add_or_update(suite))
        return self._gx

    def _store(self) -> list[Any]:
        """Store the entity's result (chunks added up); returns its and its suite's identifiers."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        merged = self._merged
        self.success = settle(merged)
        run = RunIdentifier(run_name=self.run_id, run_time=self.run_time)
        merged.meta.get("batch_markers", {}).pop("pandas_data_fingerprint", None)  # the first chunk's only
        merged.meta.update({"run_id": run, "validation_time": run.run_time,
                            "batch_parameters": {"what GX saw": coverage_text(asdict(self.coverage)),
                                                 **{k: v for k, v in asdict(self.coverage).items() if k != "seconds"}}})
        suite_id = ExpectationSuiteIdentifier(name=self.entity)
        result_id = ValidationResultIdentifier(suite_id, run, self.entity)
        self._context()[0].validation_results_store.store_validation_results(merged, result_id, suite_id)
        self._stored = self.coverage.chunks
        return [result_id, suite_id]

    def _publish(self) -> None:
        from tasks.warehouse import make_private

        make_private(self.folder, recursive=True)  # whatever the umask GX wrote them under
        self.docs_index = str(self.folder / "index.html")
        failed = [r.expectation_config.meta["rule"] for r in self._merged.results if not r.success]
        record_validation(self.folder, self.run_id, f"{self.entity}@{self.started_at.isoformat()}",
                          {"entity": self.entity, "success": self.success, "failed_rules": failed,
                           **self.coverage.as_dict()}, self.started_at)
        update_index(self.root, self.keep_runs, current=self.folder.name)


def finish_all(tallies: list[GxTally]) -> list[dict[str, Any]]:
    """:meth:`GxTally.finish` for tallies of one run, in the GX thread: the results added up since
    their last finish stored, and their data docs pages built in one go (in the GX host, for
    tallies that validate there)."""
    hosted = [t for t in tallies if t.host is not None]
    if hosted:
        _finish_in_host(hosted)
    _finish_here([t for t in tallies if t.host is None])
    return [t.record() for t in tallies]


def _finish_in_host(tallies: list[GxTally]) -> None:
    """The host stores the results of its mirrors and writes their data docs; the tallies take
    its record (success, data docs page) and counts."""
    try:
        answers = tallies[0].host.call(_host_finish, [t.spec() for t in tallies])
    except Exception:  # noqa: BLE001 - the record must not break the run
        log.exception("the Great Expectations record of run %s could not be written", tallies[0].run_id)
        for t in tallies:
            t.docs_index = ""
        return
    for t, (_record, success, docs_index, counts) in zip(tallies, answers, strict=True):
        t.success, t.docs_index = success, docs_index
        t._take_counts(counts)


def forget(tallies: list[GxTally]) -> None:
    """The run is done with these tallies: the GX host drops their mirrors."""
    hosted = [t for t in tallies if t.host is not None]
    if hosted:
        try:
            hosted[0].host.call(_host_forget, [t.spec() for t in hosted])
        except Exception:  # noqa: BLE001 - a host gone has forgotten them already
            log.debug("the GX host could not forget run %s's tallies", hosted[0].run_id, exc_info=True)


# -- in the GX host (tasks.gx_host runs these, sent by name) --------------------------------------
#: The coverage counts the host keeps (it validates); the others are the run's tally's (it selects).
HOST_COUNTS = ("rows_validated", "chunks_validated", "chunks_failed", "seconds")
#: The host's mirror tallies, by (run id, entity, data-docs root); empty in the run's process.
_MIRRORS: dict[tuple[str, str, str], GxTally] = {}


def _mirror_key(spec: dict[str, Any]) -> tuple[str, str, str]:
    return spec["run_id"], spec["entity"], spec["root"]


def _mirror(spec: dict[str, Any]) -> GxTally:
    key = _mirror_key(spec)
    tally = _MIRRORS.get(key)
    if tally is None:
        tally = _MIRRORS[key] = GxTally(spec["entity"], spec["run_id"], Path(spec["root"]), spec["keep_runs"],
                                        coverage=Coverage(**spec["coverage"]),
                                        expectations_dir=spec["expectations_dir"], started_at=spec["started_at"],
                                        run_time=spec["run_time"])
    else:
        for k, v in spec["coverage"].items():
            if k not in HOST_COUNTS:
                setattr(tally.coverage, k, v)
    return tally


def _counts(tally: GxTally) -> dict[str, Any]:
    return {k: getattr(tally.coverage, k) for k in HOST_COUNTS}


def _host_validate(spec: dict[str, Any], data: pd.DataFrame) -> dict[str, Any]:
    tally = _mirror(spec)
    tally.validate(data)
    return _counts(tally)


def _host_finish(specs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool | None, str | None, dict]]:
    tallies = [_mirror(spec) for spec in specs]
    _finish_here(tallies)
    return [(t.record(), t.success, t.docs_index, _counts(t)) for t in tallies]


def _host_forget(specs: list[dict[str, Any]]) -> None:
    for spec in specs:
        _MIRRORS.pop(_mirror_key(spec), None)


def _finish_here(tallies: list[GxTally]) -> None:
    stored, ids = [], []
    for t in tallies:
        if t._merged is None:
            t.docs_index = "" if t.coverage.chunks_failed else None
        elif t._stored != t.coverage.chunks:  # else no chunk since the last finish
            try:
                ids += t._store()
                stored.append(t)
            except Exception:  # noqa: BLE001 - the record must not break the run
                log.exception("%s: the Great Expectations result could not be stored", t.entity)
                t.docs_index = ""
    if stored:
        try:  # the run's pages of these results, and its index (it lists every entity of the run)
            stored[-1]._context()[0].build_data_docs(resource_identifiers=ids)
            for t in stored:
                t._publish()
        except Exception:  # noqa: BLE001 - the record must not break the run
            log.exception("the Great Expectations data docs of run %s could not be written", stored[0].run_id)
            for t in stored:
                t.docs_index = ""


# ---------------------------------------------------------------------------------------------
# The entities of a run (``tasks.runs.EntityResult``: ``data_docs``, ``gx_success``, ``gx``)
# ---------------------------------------------------------------------------------------------
#: entities with chunks handed to GX and not finished yet, by run id: what :func:`settle_gx` finishes
_PENDING: dict[str, list[Any]] = {}
_PENDING_LOCK = threading.Lock()


def gx_chunk(entity: str, frame: pd.DataFrame, run_id: str, settings: Settings, result: Any, *,
             validate: Callable[..., None], defer: bool) -> None:
    """Hand one checked chunk of ``result``'s entity to GX: :meth:`GxTally.select` picks its rows,
    ``validate(entity, rows, run_id, settings, result)`` validates them in the GX thread. Without
    ``defer`` this waits for it and writes the data docs (:func:`wait_gx`)."""
    tally: GxTally | None = getattr(result, "_gx", None)  # an attribute, not a field: asdict() leaves it out
    if tally is None:
        tally = result._gx = GxTally.for_settings(entity, run_id, settings)
    with _PENDING_LOCK:
        pending = _PENDING.setdefault(run_id, [])
        if not any(r is result for r in pending):
            pending.append(result)
    tally.hand_over = lambda batch: validate(entity, batch, run_id, settings, result)
    _hand_over(tally, tally.select(frame))
    if not defer:
        wait_gx(result)


def _hand_over(tally: GxTally, batches: list[pd.DataFrame]) -> None:
    for batch in batches:
        if tally.hand_over is not None:
            tally.futures.append(submit(tally.hand_over, batch, rows=len(batch)))


def _settled(result: Any, record: dict[str, Any]) -> None:
    result.data_docs, result.gx_success, result.gx = record["data_docs"], record["gx_success"], record["gx"]


def wait_gx(result: Any) -> None:
    """Wait for the chunks of ``result`` handed to GX and write its data docs: afterwards
    ``data_docs``, ``gx_success`` and ``gx`` (what GX saw) are set."""
    tally: GxTally | None = getattr(result, "_gx", None)
    if tally is None:
        return
    with _PENDING_LOCK:
        for run_id, pending in list(_PENDING.items()):
            pending[:] = [r for r in pending if r is not result]
            if not pending:
                del _PENDING[run_id]
    _hand_over(tally, tally.flush())
    tally.wait()
    _settled(result, in_gx_thread(tally.finish))
    in_gx_thread(forget, [tally])


def close_gx(result: Any) -> None:
    """Every chunk of ``result`` is handed to GX: its record and data docs are written in the GX
    thread, in the background, while the run goes on; :func:`settle_gx` waits for them."""
    tally: GxTally | None = getattr(result, "_gx", None)
    if tally is not None:
        _hand_over(tally, tally.flush())
        tally.futures.append(pool().submit(tally.finish))


def settle_gx(run_id: str) -> dict[str, dict[str, Any]]:
    """Wait for every GX validation of ``run_id`` not finished yet (the entities read with
    ``defer_gx=True``), write the run's data docs once, and return their record, ``{entity:
    {"data_docs": ..., "gx_success": ..., "gx": what GX saw (Coverage.as_dict)}}``. A run that
    defers its validations calls this once, after the loads and the publication they overlapped
    with, before it reports (an entity closed with :func:`close_gx` is finished by then)."""
    with _PENDING_LOCK:
        pending = _PENDING.pop(run_id, [])
    for result in pending:
        _hand_over(result._gx, result._gx.flush())
    for result in pending:
        result._gx.wait()
    records = in_gx_thread(finish_all, [r._gx for r in pending]) if pending else []
    if pending:
        in_gx_thread(forget, [r._gx for r in pending])
    for result, record in zip(pending, records, strict=True):
        _settled(result, record)
    return {result.entity: record for result, record in zip(pending, records, strict=True)}


def settle_gx_beside(run_id: str) -> Future[dict[str, dict[str, Any]]]:
    """:func:`settle_gx` in a thread of its own, then the GX host stopped (a later run's first
    batch starts a new one): a run that has handed GX its last batch settles while it publishes,
    and the host's memory goes back before the publication's peak instead of after it. The
    future holds what :func:`settle_gx` returns, or its error."""
    from tasks.gx_host import host

    done: Future[dict[str, dict[str, Any]]] = Future()

    def work() -> None:
        try:
            done.set_result(settle_gx(run_id))
        except BaseException as exc:  # noqa: BLE001 - the caller's, through the future
            done.set_exception(exc)
        finally:
            host().close()

    threading.Thread(target=work, name="gx-settle", daemon=True).start()
    return done


@dataclass(frozen=True)
class GxRecord:
    """The result of :func:`validate_with_gx`: GX's counts per rule and what it saw."""

    entity: str
    run_id: str
    success: bool
    rows_validated: int
    sampled: bool
    unexpected_counts: dict[str, int]
    element_counts: dict[str, int]
    successes: dict[str, bool]
    docs_index: str
    coverage: dict[str, Any]


def validate_with_gx(entity: str, frame: pd.DataFrame, run_id: str, docs_dir: Path | str, *, row_budget: int = 0,
                     sample_fraction: float = 0.1, keep_runs: int = 0, chunk_rows: int | None = None,
                     expectations_dir: Path | None = None) -> GxRecord:
    """Validate ``frame`` as one run's chunks of ``entity`` (``chunk_rows`` each; default: one
    chunk) in this thread, as the pipeline does in its GX thread, and write the data docs under
    ``<docs_dir>/<run_id>/``."""
    tally = GxTally(entity, run_id, Path(docs_dir).resolve(), keep_runs, expectations_dir=expectations_dir,
                    coverage=Coverage(row_budget=row_budget, sample_fraction=sample_fraction))
    step = chunk_rows or max(len(frame), 1)
    for start in range(0, len(frame), step):
        for batch in tally.select(frame.iloc[start:start + step]):
            tally.validate(batch)
    for batch in tally.flush():
        tally.validate(batch)
    tally.finish()
    counts = counts_by_rule(tally._merged, entity)
    cov = tally.coverage.as_dict()
    return GxRecord(entity, run_id, all(counts["success"].values()), cov["rows_validated"], cov["sampled"],
                    counts["unexpected"], counts["elements"], counts["success"], tally.docs_index or "", cov)

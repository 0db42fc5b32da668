"""A run's record: what it did (:class:`EntityResult`, :class:`RunResult`) and its ``dq.*`` rows.

- ``dq.runs``: :func:`start_run` ('running', and closes as 'crashed' a run a dead process left
  'running'), :func:`finish_run` (success, blocked, failed...).
- ``dq.check_results``: :func:`record_checks`, one row per rule of an entity's run.
- ``dq.backfill_partitions``: :func:`backfill_id`, :func:`done_partitions`, :func:`mark_partition`.
- ``dq.quarantine``: :func:`first_failing_records`, the first records a run quarantined, by their
  codes and reasons and without personal data (:class:`FailingRecord`), for its alert.

:class:`RunResult` is what a run hands to the flows: their summary (:meth:`RunResult.as_summary`),
the checks artifact (:func:`checks_markdown`) and the one alert decision
(``tasks.alerts.alerts_for_run``) all read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tasks.clock import now_local
from tasks.entities import PERSONAL_FIELDS
from tasks.warehouse import local_write_lock

if TYPE_CHECKING:
    from tasks.load import LoadResult
    from tasks.quality import CheckResult


@dataclass
class EntityResult:
    """One entity's part of a run: rows received, read, loaded and quarantined, and its checks."""

    entity: str
    rows_received: int = 0
    rows_duplicate: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    warnings: int = 0
    chunks: int = 0
    watermark: datetime | None = None
    window: tuple[datetime | None, datetime | None] = (None, None)
    batches: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)  # sub-windows read
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule -> counts
    data_docs: str | None = None  # the run's GX data docs page (tasks.gx)
    gx_success: bool | None = None
    gx: dict[str, Any] = field(default_factory=dict)  # what GX saw: rows_validated of rows_checked... (tasks.gx)

    def add(self, r: LoadResult) -> None:
        self.rows_received += r.rows_received
        self.rows_duplicate += r.rows_duplicate
        self.rows_read += r.rows_read
        self.rows_loaded += r.rows_loaded
        self.rows_quarantined += r.rows_quarantined
        self.warnings += r.warnings
        self.chunks += 1

    def add_checks(self, results: Iterable[CheckResult]) -> None:
        """Add one chunk's check results to the entity's counts per rule (the detail kept is the
        latest failure's)."""
        for r in results:
            agg = self.checks.setdefault(
                r.rule, {"severity": r.severity, "element_count": 0, "unexpected_count": 0, "detail": r.detail}
            )
            agg["element_count"] += int(r.element_count or 0)
            agg["unexpected_count"] += int(r.unexpected_count or 0)
            if r.unexpected_count:
                agg["detail"] = r.detail

    def failing(self) -> dict[str, dict[str, Any]]:
        """The rules that failed on at least one row (or batch), by name."""
        return {rule: v for rule, v in self.checks.items() if v["unexpected_count"]}

    @property
    def reconciled(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined


@dataclass
class RunResult:
    """What a run did, as the flows report it and the alerts decide on it."""

    run_id: str
    source: str
    entities: dict[str, EntityResult] = field(default_factory=dict)
    http: dict[str, dict[str, Any]] = field(default_factory=dict)  # entity -> its HTTP client's counters
    blocked: bool = False  # the data-quality gate closed: critical failures above the threshold
    published: list[dict[str, Any]] = field(default_factory=list)  # one record per publication
    purged: dict[str, Any] | None = None  # what the retention purge removed (or its error)
    failed_files: list[tuple[str, str]] = field(default_factory=list)  # inbox: (file, why it was not read)
    flow_run_id: str | None = None  # the Prefect flow run (else the alert reads prefect.runtime)
    failing_records: list[FailingRecord] = field(default_factory=list)  # the first quarantined (alerts)
    failing_records_total: int = 0  # how many records the run quarantined in all (dq.quarantine)

    @property
    def rows_quarantined(self) -> int:
        return sum(e.rows_quarantined for e in self.entities.values())

    @property
    def warnings(self) -> int:
        return sum(e.warnings for e in self.entities.values())

    @property
    def data_docs(self) -> str | None:
        """The run's Great Expectations data docs (one index for the run), if any was built."""
        return next((e.data_docs for e in self.entities.values() if e.data_docs), None)

    def read_failing_records(self, engine: Engine, limit: int = 10) -> None:
        """Fill :attr:`failing_records` (the first ``limit``) and :attr:`failing_records_total` from
        the run's ``dq.quarantine`` rows, when it quarantined any (:func:`first_failing_records`)."""
        if self.rows_quarantined and not self.failing_records:
            self.failing_records, self.failing_records_total = first_failing_records(engine, self.run_id, limit)

    def as_summary(self) -> dict[str, Any]:
        """The run as plain data: what the nightly flow returns and the CLI prints."""
        entities = {}
        for name, e in self.entities.items():
            entities[name] = asdict(e)
            if name in self.http:
                entities[name]["http"] = self.http[name]
        return {"run_id": self.run_id, "source": self.source, "entities": entities,
                "rows_quarantined": self.rows_quarantined, "published": self.published, "blocked": self.blocked,
                "purged": self.purged, "data_docs": self.data_docs}


def checks_markdown(result: RunResult) -> str:
    """The run's checks as markdown (the ``dvc-checks`` artifact): counts per entity, then every
    rule that failed, the data docs and whether the gate closed."""
    lines = [f"# dvc-etl run `{result.run_id}`", "", "| entity | read | loaded | quarantined | warnings | reconciled |",
             "|---|---:|---:|---:|---:|---|"]
    for name, e in result.entities.items():
        lines.append(f"| {name} | {e.rows_read} | {e.rows_loaded} | {e.rows_quarantined} | {e.warnings} | "
                     f"{'yes' if e.reconciled else '**NO**'} |")
    lines += ["", "| entity | rule | severity | failed | checked |", "|---|---|---|---:|---:|"]
    for name, e in result.entities.items():
        for rule, v in sorted(e.failing().items()):
            lines.append(f"| {name} | {rule} | {v['severity']} | {v['unexpected_count']} | {v['element_count']} |")
    if result.data_docs:
        lines += ["", f"Data docs: `{result.data_docs}`"]
        lines += [f"- {name}: {e.gx['text']}" for name, e in result.entities.items() if e.gx.get("text")]
    if result.blocked:
        lines += ["", "**Reports not published: critical failures above the threshold.**"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# dq.runs
# ----------------------------------------------------------------------------------------------
def start_run(engine: Engine, run_id: str, flow: str, source: str) -> None:
    """Record a run as started. Called while holding the warehouse's writer lock, so a run still
    marked 'running' belongs to a process that died (SIGKILL, power loss): it is closed as
    'crashed', naming the run that noticed."""
    now = now_local()
    with engine.begin() as c:
        c.execute(
            sa.text(
                "UPDATE dq.runs SET status = 'crashed', finished_at = :t, published = false, "
                "message = :m WHERE status = 'running'"
            ),
            {"t": now, "m": f"the process ended without finishing; found by run {run_id}"},
        )
        c.execute(
            sa.text(
                "INSERT INTO dq.runs (run_id, flow, source, started_at, status) VALUES (:r, :f, :s, :t, 'running')"
            ),
            {"r": run_id, "f": flow, "s": source, "t": now},
        )


def finish_run(engine: Engine, run_id: str, status: str, published: bool | None, message: str = "") -> None:
    with engine.begin() as c:
        c.execute(
            sa.text(
                "UPDATE dq.runs SET finished_at = :t, status = :st, published = :p, message = :m WHERE run_id = :r"
            ),
            {"t": now_local(), "st": status, "p": published, "m": message[:4000], "r": run_id},
        )


# ----------------------------------------------------------------------------------------------
# dq.check_results
# ----------------------------------------------------------------------------------------------
def record_checks(engine: Engine, run_id: str, source: str, entity: str, res: EntityResult) -> None:
    """Replace the run's ``dq.check_results`` rows of ``entity`` with ``res.checks``. Threads of
    one run (a backfill's partitions) take turns (``local_write_lock``): on DuckDB two concurrent
    transactions deleting the same rows conflict."""
    now = now_local()
    with local_write_lock(engine), engine.begin() as c:
        c.execute(
            sa.text("DELETE FROM dq.check_results WHERE run_id = :r AND source = :s AND entity = :e"),
            {"r": run_id, "s": source, "e": entity},
        )
        for rule, v in res.checks.items():
            c.execute(
                sa.text(
                    "INSERT INTO dq.check_results (run_id, source, entity, rule, severity, success, element_count, "
                    "unexpected_count, detail, recorded_at) VALUES (:r, :s, :e, :rule, :sev, :ok, :n, :u, :d, :t)"
                ),
                {
                    "r": run_id, "s": source, "e": entity, "rule": rule, "sev": v["severity"],
                    "ok": v["unexpected_count"] == 0, "n": v["element_count"], "u": v["unexpected_count"],
                    "d": v.get("detail"), "t": now,
                },
            )


# ----------------------------------------------------------------------------------------------
# dq.backfill_partitions
# ----------------------------------------------------------------------------------------------
def backfill_id(source: str, start: date, end: date) -> str:
    return f"{source}:{start}:{end}"


def done_partitions(engine: Engine, bid: str) -> set[date]:
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT partition_start FROM dq.backfill_partitions WHERE backfill_id = :b AND status = 'done'"),
            {"b": bid},
        )
        return {r[0] if isinstance(r[0], date) else r[0].date() for r in rows}


def mark_partition(
    engine: Engine, bid: str, part: tuple[date, date], status: str, run_id: str,
    results: list[EntityResult] | None = None, message: str = "",
) -> None:
    now = now_local()
    read = sum(r.rows_read for r in results or [])
    loaded = sum(r.rows_loaded for r in results or [])
    q = sum(r.rows_quarantined for r in results or [])
    with local_write_lock(engine), engine.begin() as c:  # a backfill's partitions are threads of one run
        c.execute(
            sa.text(
                "INSERT INTO dq.backfill_partitions AS p (backfill_id, partition_start, partition_end, status, run_id, "
                "started_at, finished_at, rows_read, rows_loaded, rows_quarantined, message) VALUES (:b, :s, :e, :st, "
                ":r, :t, :f, :rd, :ld, :q, :m) ON CONFLICT (backfill_id, partition_start) DO UPDATE SET "
                "status = excluded.status, run_id = excluded.run_id, finished_at = excluded.finished_at, "
                "rows_read = excluded.rows_read, rows_loaded = excluded.rows_loaded, "
                "rows_quarantined = excluded.rows_quarantined, message = excluded.message"
            ),
            {"b": bid, "s": part[0], "e": part[1], "st": status, "r": run_id, "t": now,
             "f": None if status == "running" else now, "rd": read, "ld": loaded, "q": q, "m": message[:2000]},
        )


# ----------------------------------------------------------------------------------------------
# dq.quarantine: the first records a run quarantined, for its alert
# ----------------------------------------------------------------------------------------------
#: Raw-record fields whose values are personal data, beyond the source contract's three
#: (``tasks.entities.PERSONAL_FIELDS``): any applicant, phone, ID, address or e-mail field a
#: clerk's file may add.
_PERSONAL_FIELD = re.compile(r"ChuHoSo|DienThoai|GiayTo|DiaChi|Email|CCCD|CMND", re.IGNORECASE)
#: What looks like a phone number (0 or +84 and 9-10 digits) or an ID number (9-digit CMND,
#: 12-digit CCCD), standing alone: masked even when the record is gone (retention) or the value
#: sits in another field than its own.
_ID_OR_PHONE = re.compile(r"(?<![\w.+])(?:(?:\+?84|0)\d{8,10}|\d{9}|\d{12})(?![\w.])")
_ENTITY_ORDER = "CASE entity WHEN 'dossiers' THEN 0 WHEN 'payments' THEN 1 WHEN 'procedures' THEN 2 ELSE 3 END"
MAX_DETAIL = 160


def scrub_personal(text: str, record: dict[str, Any] | None = None) -> str:
    """``text`` with every personal value of ``record`` (its applicant's name, ID and phone
    number, and any field named like one) and anything shaped like a phone or ID number replaced
    by ``***``."""
    for name, value in (record or {}).items():
        if name in PERSONAL_FIELDS or _PERSONAL_FIELD.search(str(name)):
            value = "" if value is None else str(value).strip()
            if len(value) >= 2:
                text = text.replace(value, "***")
    return _ID_OR_PHONE.sub("***", text)


@dataclass(frozen=True)
class FailingRecord:
    """A record a run quarantined as an alert names it: its codes, and the rules it failed with
    their (scrubbed) details. Never personal data: the raw record is read only to find a payment's
    dossier code and to scrub the details."""

    entity: str
    record_key: str  # MaHoSo, Ma, MaTTHC, MaDonVi|HieuLucTu; '#<hash>' when the record had no key
    dossier: str = ""  # MaHoSo (a payment's dossier)
    failures: tuple[tuple[str, str], ...] = ()  # (rule, detail)

    def text(self, max_rules: int = 3) -> str:
        """``MaHoSo X: rule (detail); rule (detail)``; a payment ``Ma P (MaHoSo X): ...``."""
        from tasks.entities import REGISTRY

        ent = REGISTRY.get(self.entity)
        key_name = "/".join(ent.key) if ent else "key"
        if self.record_key.startswith("#"):
            who = f"{self.entity} record {self.record_key} without {key_name}"
        else:
            who = f"{key_name} {self.record_key}"
        if self.entity == "payments" and self.dossier:
            who += f" (MaHoSo {self.dossier})"
        rules = [f"{rule} ({detail})" if detail else rule for rule, detail in self.failures[:max_rules]]
        more = f"; +{len(self.failures) - max_rules} more rules" if len(self.failures) > max_rules else ""
        return f"{who}: " + "; ".join(rules) + more


def _json(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def first_failing_records(engine: Engine, run_id: str, limit: int = 10) -> tuple[list[FailingRecord], int]:
    """The first ``limit`` records ``run_id`` quarantined and still open (dossiers, then payments,
    procedures, units; by key, keyless records last), and how many it quarantined in all."""
    where = "run_id = :r AND resolved_at IS NULL"
    with engine.connect() as c:
        total = int(c.execute(sa.text(
            f"SELECT count(*) FROM (SELECT DISTINCT entity, record_key FROM dq.quarantine WHERE {where}) AS q"  # noqa: S608
        ), {"r": run_id}).scalar_one())
        first = c.execute(sa.text(
            f"SELECT entity, record_key FROM dq.quarantine WHERE {where} GROUP BY entity, record_key "  # noqa: S608
            f"ORDER BY {_ENTITY_ORDER}, record_key LIKE '#%', record_key LIMIT :n"
        ), {"r": run_id, "n": limit}).fetchall()
        rows: dict[tuple[str, str], list[Any]] = {(e, k): [] for e, k in first}
        stmt = sa.text(f"SELECT entity, record_key, rule, detail, raw_record FROM dq.quarantine WHERE {where} "  # noqa: S608
                       "AND entity = :e AND record_key IN :keys ORDER BY rule").bindparams(
            sa.bindparam("keys", expanding=True))
        for ent in dict.fromkeys(e for e, _ in first):
            for r in c.execute(stmt, {"r": run_id, "e": ent, "keys": [k for e, k in first if e == ent]}):
                rows[(r.entity, r.record_key)].append(r)
    out = []
    for (ent, key), found in rows.items():
        record = next((rec for r in found if (rec := _json(r.raw_record))), {})
        dossier = key if ent == "dossiers" else str(record.get("MaHoSo") or "") if ent == "payments" else ""
        failures = tuple((r.rule, scrub_personal(" ".join(str(r.detail or "").split()), record)[:MAX_DETAIL])
                         for r in found)
        out.append(FailingRecord(ent, scrub_personal(key, record), scrub_personal(dossier, record), failures))
    return out, total

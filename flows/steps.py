"""What the Prefect UI shows of a run: its units of work as task runs, and its artifacts.

- :class:`PrefectSteps`: ``tasks.pipeline.run_nightly``'s units (sync-catalogues, extract-load,
  publish-period) each as a Prefect task run, and a headline artifact per publication.
- :func:`publish_task`: the publish-period task of the report, monthly and backfill flows.
- Artifacts: ``dvc-headline`` (a publication's headline figures, system and paid-only side by
  side) and ``dvc-checks`` (the run's checks, ``tasks.runs.checks_markdown``). An artifact never
  fails a run.

Retries live in the HTTP client (bounded, jittered, with a run-wide budget), not in Prefect task
retries: the client knows which errors are worth retrying. Tasks use ``NO_CACHE``: every run does
the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from tasks import pipeline, publishing
from tasks.clock import CALENDAR
from tasks.runs import RunResult, checks_markdown
from tasks.settings import Settings
from tasks.warehouse import open_warehouse

if TYPE_CHECKING:
    from tasks.reports import Publication

log = logging.getLogger(__name__)
T = TypeVar("T")


class PrefectSteps(pipeline.NightlySteps):
    """``run_nightly``'s units of work as Prefect task runs, with a headline artifact per publication."""

    def run(self, name: str, unit: Callable[..., T], /, **params: Any) -> T:
        return task(name=name, cache_policy=NO_CACHE)(unit)(**params)

    def published(self, engine: Engine, publication: Publication) -> None:
        publish_headline_artifact(engine, publication)


@task(name="publish-period", cache_policy=NO_CACHE)
def publish_task(
    settings: Settings, run_id: str, period: tuple[date, date], period_cut: str | None = None,
    period_label: str | None = None, analyst_copy: bool = True,
) -> dict[str, Any]:
    """Publish one period and write its workbook (``tasks.publishing.publish_period``), with its
    headline artifact; with ``analyst_copy``, refresh the analysts' DuckDB copy after it. ``period_cut`` / ``period_label`` (a period of ``tasks.clock.resolve_period``:
    ``calendar`` / ``2024-H1``) are recorded on the publication and named in the workbook; both
    None (a --from/--to range, a backfill's months): the publication's defaults."""
    return publishing.publish_period(open_warehouse(settings), settings, period, run_id, period_cut=period_cut,
                                     period_label=period_label, on_publication=publish_headline_artifact,
                                     analyst_copy=analyst_copy)


# ----------------------------------------------------------------------------------------------
# artifacts
# ----------------------------------------------------------------------------------------------
#: The nine indicators of Decision 766/QĐ-TTg a publication reports, in the workbook's order:
#: (code, number in Decision 766 or "", label). The labels name the rows of the headline artifact
#: and of the CLI summary whatever label ``reports.headline`` gives (a stable interface).
INDICATORS_766: tuple[tuple[str, str, str], ...] = (  # as sql/reports/rpt_service_indicators.sql names them
    ("on_time", "2.1", "Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn"),
    ("online_submission", "3.3", "Tỷ lệ hồ sơ nộp trực tuyến"),
    ("online_payment", "3.6", "Tỷ lệ hồ sơ thanh toán trực tuyến"),
    ("e_result", "4.1", "Tỷ lệ hồ sơ có cấp kết quả giải quyết điện tử"),
    ("digitised", "4.2", "Tỷ lệ hồ sơ thực hiện số hóa hồ sơ"),
    ("reuse", "4.3", "Tỷ lệ hồ sơ khai thác, sử dụng lại thông tin, dữ liệu số hóa"),
    ("from_national_store", "4.4", "Tỷ lệ hồ sơ số hóa có kết nối, chia sẻ dữ liệu phục vụ tái sử dụng"),
    ("online_service_uptake", "3.2", "Tỷ lệ dịch vụ công trực tuyến có phát sinh hồ sơ"),
    ("online_payment_uptake", "", "Tỷ lệ TTHC cung cấp thanh toán trực tuyến có phát sinh giao dịch"),
)


def headline_indicators(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The 766 rates of a headline (``reports.headline``), one dict per indicator: ``code``,
    ``code_766``, ``label``, ``system``, ``paid_only`` (fractions or None).

    Reads ``head["indicators"]`` (code -> {"rate_system", "rate_paid_only", "label"}) when it is
    there: the indicators of :data:`INDICATORS_766` it has, in that order and with those labels,
    then any other code with its own label. Otherwise the flat keys ``<code>_rate_system`` and
    ``<code>_rate_paid_only`` (``on_time_rate_system``...): the indicators of
    :data:`INDICATORS_766` they cover."""
    known = {code: (number, label) for code, number, label in INDICATORS_766}
    given = head.get("indicators")
    if isinstance(given, dict) and given:
        codes = [c for c, _, _ in INDICATORS_766 if c in given] + [c for c in given if c not in known]
        out = []
        for c in codes:
            v = given[c] or {}
            number, label = known.get(c, (v.get("code_766") or "", v.get("label") or c))
            out.append({"code": c, "code_766": number, "label": label, "system": v.get("rate_system"),
                        "paid_only": v.get("rate_paid_only")})
        return out
    return [{"code": code, "code_766": number, "label": label, "system": head.get(f"{code}_rate_system"),
             "paid_only": head.get(f"{code}_rate_paid_only")}
            for code, number, label in INDICATORS_766
            if f"{code}_rate_system" in head or f"{code}_rate_paid_only" in head]


def headline_rows(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of a publication as table rows: system and paid-only side by side."""
    return [
        *({"indicator": i["label"], "system": i["system"], "paid_only": i["paid_only"]}
          for i in headline_indicators(head)),
        {"indicator": "Hồ sơ tiếp nhận", "system": head.get("received"), "paid_only": None},
        {"indicator": "Hồ sơ đã giải quyết", "system": head.get("resolved"), "paid_only": None},
        {"indicator": "Hồ sơ trễ hạn", "system": head.get("late"), "paid_only": None},
    ]


def publish_headline_artifact(engine: Engine, pub: Publication) -> None:
    """A Prefect table artifact of the publication's headline figures (never fails the run)."""
    try:
        from prefect.artifacts import create_table_artifact

        from tasks.reports import headline

        head = headline(engine, pub)
        create_table_artifact(
            key="dvc-headline", table=headline_rows(head),
            description=f"{head.get('sentence', '')} ({_period_text(pub)}, as of {pub.as_of})",
        )
    except Exception:  # noqa: BLE001 - an artifact must not fail the publication
        log.exception("could not publish the headline artifact")


def _period_text(pub: Publication) -> str:
    """``2024-01-01 .. 2024-06-30`` and, for a named period, `` (2024-H1, calendar)``."""
    text = f"{pub.period_start} .. {pub.period_end}"
    return f"{text} ({pub.period_label}, {pub.period_cut or CALENDAR})" if pub.period_label else text


def publish_checks_artifact(result: RunResult) -> None:
    """The run's checks as a Prefect markdown artifact, ``dvc-checks`` (never fails the run)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="dvc-checks", markdown=checks_markdown(result),
                                 description=f"data-quality checks of run {result.run_id}")
    except Exception:  # noqa: BLE001 - an artifact must not fail the run
        log.exception("could not publish the checks artifact")

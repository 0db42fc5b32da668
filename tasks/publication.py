"""The record of one publication (a row of ``mart.publications``): :class:`Publication`.

Its own module, with nothing of the warehouse's, so that the workbook's worker process
(:mod:`tasks.workbook_worker`), which receives one with each workbook to write, imports neither
SQLAlchemy nor pandas. :mod:`tasks.reports` makes and reads publications and names this class too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class Publication:
    """One publication of the report tables for one period."""

    publication_id: str
    period_start: date
    period_end: date
    as_of: datetime
    published_at: datetime
    run_id: str
    is_current: bool = True
    workbook_path: str | None = None
    row_counts: Mapping[str, int] = field(default_factory=dict)
    period_cut: str = "calendar"
    period_label: str | None = None

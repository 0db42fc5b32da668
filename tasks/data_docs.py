"""The data-docs site: one folder per run, and one index of every run kept.

Under ``<DVC_REPORTS_DIR>/data-docs/``:

* ``index.html``: every run kept, newest first, with its time, the entities Great Expectations
  validated, their result (passed / failed) and how many of the rows the checks read GX saw;
* ``<run id>/index.html``: the run's Great Expectations data docs (``tasks.gx`` builds them);
* ``<run id>/dvc-run.json``: the run's record behind the index: per validation, what GX saw.

Retention: when the index is rewritten, only the newest ``DVC_DATA_DOCS_KEEP_RUNS`` run folders
stay (0: every run); older ones are deleted. Links to a run's page (:func:`data_docs_link`) use
``DVC_DATA_DOCS_URL`` as their base when it is set (a web server publishing this folder), the
file path otherwise.

The pages show failing values, personal data: folders are 0700, files 0600, and GX's copy of the
values is HTML-escaped (:func:`html_safe`). :func:`gx_context` keeps a run's GX stores and pages in
its folder (``great_expectations`` is imported only there).
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import types
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from tasks.clock import ZONE
from tasks.resources import gc_paused
from tasks.settings import Settings

log = logging.getLogger(__name__)

INDEX = "index.html"
RUN_RECORD = "dvc-run.json"
#: The coverage counts that add up when one entity was validated in several parts (backfill partitions).
_SUMMED = ("rows_checked", "rows_in_full", "rows_beyond_budget", "rows_sampled", "rows_validated", "chunks",
           "chunks_validated", "chunks_failed")
_LOCK = threading.Lock()  # the record files and the index are rewritten whole
_HTML_SPECIAL = re.compile(r"[<>&\"']")


def safe_name(text: str) -> str:
    """``text`` as one safe path segment (a run id becomes its folder's name)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def docs_root(settings: Settings) -> Path:
    """The data-docs site: ``<DVC_REPORTS_DIR>/data-docs``, absolute."""
    return (Path(settings.reports_dir) / "data-docs").resolve()


def data_docs_link(settings: Settings, run_id: str) -> str | None:
    """The link to ``run_id``'s data docs for alerts and summaries: ``<DVC_DATA_DOCS_URL>/<run>/index.html``
    when that is set, else the page's file path; None when the run has no data docs (Great
    Expectations validated nothing, or retention has deleted them)."""
    page = docs_root(settings) / safe_name(run_id) / INDEX
    if not page.is_file():
        return None
    if settings.data_docs_url:
        return f"{settings.data_docs_url.rstrip('/')}/{quote(safe_name(run_id))}/{INDEX}"
    return str(page)


def site_link(settings: Settings) -> str:
    """The link to the site's index of every run (``DVC_DATA_DOCS_URL`` or the file path)."""
    if settings.data_docs_url:
        return f"{settings.data_docs_url.rstrip('/')}/{INDEX}"
    return str(docs_root(settings) / INDEX)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, owner-only (0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_validation(folder: Path, run_id: str, token: str, entry: dict[str, Any], started_at: datetime) -> None:
    """Add (or replace) one validation's entry (``token``: one per validated part of an entity) in
    the run record ``<folder>/dvc-run.json``."""
    path = folder / RUN_RECORD
    with _LOCK:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {"run_id": run_id, "started_at": started_at.isoformat(timespec="seconds"), "validations": {}}
        doc["started_at"] = min(doc.get("started_at") or "9999", started_at.isoformat(timespec="seconds"))
        doc["validations"][token] = entry
        _write_private(path, json.dumps(doc, indent=1, sort_keys=True, default=str))


@dataclass
class RunEntry:
    """One run of the site: its folder, time and, per entity, what GX saw (the parts summed)."""

    run_id: str
    folder: Path
    started_at: datetime
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def success(self) -> bool | None:
        """True when every validation passed; None for a folder without a record."""
        return all(e["success"] for e in self.entities.values()) if self.entities else None


def _entry(folder: Path) -> RunEntry:
    try:
        doc = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a folder of an older version: no record, its time is its mtime
        mtime = datetime.fromtimestamp(folder.stat().st_mtime, ZONE).replace(tzinfo=None)
        return RunEntry(folder.name, folder, mtime)
    run = RunEntry(str(doc.get("run_id") or folder.name), folder, datetime.fromisoformat(doc["started_at"]))
    for v in doc.get("validations", {}).values():
        e = run.entities.setdefault(v["entity"], {k: 0 for k in _SUMMED} | {"success": True, "failed_rules": []})
        for k in _SUMMED:
            e[k] += int(v.get(k) or 0)
        e["success"] = e["success"] and bool(v.get("success"))
        e["failed_rules"] = sorted(set(e["failed_rules"]) | set(v.get("failed_rules") or []))
    return run


def list_runs(root: Path) -> list[RunEntry]:
    """The run folders under ``root``, newest first (folders without a run's pages are ignored)."""
    runs = []
    for folder in root.iterdir() if root.is_dir() else []:
        if folder.is_symlink() or not folder.is_dir():
            continue
        if any((folder / name).exists() for name in (RUN_RECORD, INDEX, "_gx")):
            runs.append(_entry(folder))
    return sorted(runs, key=lambda r: (r.started_at, r.run_id), reverse=True)


def update_index(root: Path, keep_runs: int, *, current: str | None = None) -> list[RunEntry]:
    """Delete the run folders beyond the newest ``keep_runs`` (0: keep all; never the folder of
    ``current``, the run writing now) and rewrite ``<root>/index.html``. Returns the runs kept."""
    with _LOCK:
        runs = list_runs(root)
        keep = runs if keep_runs <= 0 else runs[:keep_runs]
        for old in runs[len(keep):]:
            if old.folder.name == current:
                keep.append(old)
                continue
            log.info("data docs: deleting %s (DVC_DATA_DOCS_KEEP_RUNS=%d)", old.folder, keep_runs)
            shutil.rmtree(old.folder, ignore_errors=True)
        _write_private(root / INDEX, render_index(keep))
        return keep


@dataclass
class Coverage:
    """What GX saw of one entity in one run (``rows_validated`` of ``rows_checked``)."""

    rows_checked: int = 0  # rows of the chunks the masks checked
    rows_in_full: int = 0  # rows handed to GX within the budget
    rows_beyond_budget: int = 0
    rows_sampled: int = 0  # rows of the sample beyond the budget handed to GX
    rows_validated: int = 0  # rows GX validated (handed to it, less the chunks it could not run on)
    chunks: int = 0
    chunks_validated: int = 0
    chunks_failed: int = 0
    row_budget: int = 0  # DVC_GX_ROW_BUDGET (0: none)
    sample_fraction: float = 1.0  # DVC_GX_SAMPLE_FRACTION
    seconds: float = 0.0  # time GX spent validating, in its thread

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"sampled": self.rows_beyond_budget > 0, "text": coverage_text(asdict(self))}


def coverage_text(cov: dict[str, Any]) -> str:
    """``GX saw N of M rows`` in words, for the index, summaries and alerts."""
    seen, total = int(cov.get("rows_validated") or 0), int(cov.get("rows_checked") or 0)
    text = f"GX validated {seen:,} of {total:,} rows"
    chunks = int(cov.get("chunks") or 0)
    text += f" ({int(cov.get('chunks_validated') or 0)} of {chunks} chunks)" if chunks else ""
    beyond = int(cov.get("rows_beyond_budget") or 0)
    if beyond:
        text += (f": the first {int(cov.get('rows_in_full') or 0):,} in full (DVC_GX_ROW_BUDGET), then a "
                 f"deterministic sample of {int(cov.get('rows_sampled') or 0):,} of the {beyond:,} rows beyond")
    if cov.get("chunks_failed"):
        text += f"; GX could not run on {cov['chunks_failed']} chunks (see the log)"
    return text


def render_index(runs: list[RunEntry]) -> str:
    """The site's index page: one row per run, newest first."""
    esc = html.escape
    rows = []
    for r in runs:
        if r.success is None:
            verdict, cls = "no record", ""
        else:
            failed = sorted({f"{e}.{rule}" for e, v in r.entities.items() for rule in v["failed_rules"]})
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            verdict = "passed" if r.success else f"failed ({len(failed)} rules): " + ", ".join(failed[:5]) + more
            cls = "pass" if r.success else "fail"
        ents = "<br>".join(f"{esc(e)}: {'passed' if v['success'] else 'failed'}" for e, v in sorted(r.entities.items()))
        seen = "<br>".join(f"{esc(e)}: {esc(coverage_text(v))}" for e, v in sorted(r.entities.items()))
        rows.append(
            f'<tr><td><a href="{esc(quote(r.folder.name))}/{INDEX}">{esc(r.run_id)}</a></td>'
            f"<td>{r.started_at:%Y-%m-%d %H:%M:%S}</td><td>{ents}</td><td class=\"{cls}\">{esc(verdict)}</td>"
            f"<td>{seen}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="5">no run yet</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dvc-etl data docs</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}}
.pass{{color:#176f2c}}.fail{{color:#b00020}}</style></head>
<body><h1>dvc-etl data docs</h1>
<p>Great Expectations' record of the data-quality checks, one run per row, newest first. The checks
themselves decide which rows are quarantined; GX validates the chunks of a run in full up to
DVC_GX_ROW_BUDGET rows per entity and a deterministic sample beyond.</p>
<table><thead><tr><th>run</th><th>started</th><th>entities</th><th>GX result</th><th>rows seen by GX</th></tr>
</thead><tbody>
{body}
</tbody></table></body></html>
"""


# ---------------------------------------------------------------------------------------------
# Great Expectations: the context of a run, and the values it shows
# ---------------------------------------------------------------------------------------------
#: Modules ``great_expectations`` imports as it is imported, for expectations and renderers the
#: suites never use (``expect_column_kl_divergence_to_be_less_than``: SciPy's statistics, Altair's
#: charts): :func:`defer_unused_gx_modules` makes them load when first used instead.
GX_UNUSED_MODULES = ("scipy.stats", "altair")
_deferred_lock = threading.RLock()


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module not loaded yet; the first attribute it lacks loads
    the module (which replaces it there) and every later one is read from the module."""

    def __getattr__(self, attr: str) -> Any:
        with _deferred_lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
                log.debug("loading %s, deferred until used (%s)", self.__name__, attr)
            module = importlib.import_module(self.__name__)
        return getattr(module, attr)


def defer_unused_gx_modules() -> None:
    """Put a :class:`_Deferred` in ``sys.modules`` for each of :data:`GX_UNUSED_MODULES` not yet
    imported, before ``great_expectations`` is: its import then costs a third less time and its
    process less memory (``bench/README.md``). What uses one of them (an expectation or a page
    that needs it) loads it then, as a plain import would have, so nothing else changes."""
    with _deferred_lock:
        for name in GX_UNUSED_MODULES:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None:
                continue
            stand_in = _Deferred(name)
            stand_in.__spec__, stand_in.__file__, stand_in.__loader__ = spec, spec.origin, spec.loader
            sys.modules[name] = stand_in


def preload_gx() -> None:
    """Import what a validation imports (``great_expectations``: seconds), ahead of the first
    validation: the GX host (:mod:`tasks.gx_host`) does it as it starts, while the run reads.
    The cyclic collector is paused meanwhile: the import makes hundreds of thousands of objects,
    none of them garbage, that its collections would walk again and again (``bench/README.md``)."""
    with gc_paused():
        defer_unused_gx_modules()
        import great_expectations  # noqa: F401
        from great_expectations.core.expectation_suite import ExpectationSuite  # noqa: F401
        from great_expectations.core.run_identifier import RunIdentifier  # noqa: F401
        from great_expectations.data_context.types.base import DataContextConfig  # noqa: F401
        from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier  # noqa: F401
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration  # noqa: F401
        from great_expectations.validator.v1_validator import Validator  # noqa: F401


def gx_context(run_dir: Path) -> Any:
    """An ephemeral GX context whose stores and data docs live under ``run_dir`` only.

    Suites and validation results are kept in files under ``run_dir/_gx`` so that the run's data
    docs list every entity validated in the run; progress bars are off.
    """
    defer_unused_gx_modules()
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    stores = dict(defaults.stores)
    for store_name, sub in ((defaults.expectations_store_name, "expectations"),
                            (defaults.validation_results_store_name, "validations")):
        stores[store_name] = {
            **stores[store_name],
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(run_dir / "_gx" / sub)},
        }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        stores=stores,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={
            "dvc_docs": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(run_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def html_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text value that holds ``< > & " '`` HTML-escaped, for Great
    Expectations: its data docs put unexpected values into the page unescaped, so a record whose
    text holds ``<script>`` would run in the reader's browser. Escaped, it shows as the text it is.
    Only GX's copy is escaped (the quarantine masks read the original values); ``html.escape`` is
    one-to-one, so uniqueness rules count the same, and no value set or pattern of the suites
    holds those characters, so set and regex rules fail the same rows."""
    import html

    out = None
    for col in frame.columns:
        s = frame[col]
        if not (s.dtype == object or isinstance(s.dtype, pd.StringDtype)):
            continue
        text = s.map(lambda v: isinstance(v, str) and _HTML_SPECIAL.search(v) is not None)
        if not text.any():
            continue
        if out is None:
            out = frame.copy()
        out[col] = s.where(~text, s[text].map(lambda v: html.escape(v, quote=True)))
    return frame if out is None else out

"""Golden tests of the official figures (docs/official-figures.md), on DuckDB and PostgreSQL.

The simulator's records go through the real pipeline (HTTP API on loopback -> normalise -> checks ->
core.*; or the clerk's file exports through the inbox loader), then ``reports.publish`` builds the
mart tables for three periods:

- the calendar month 2024-03;
- the decree-09 half-year 2024-H1 (2023-12-15 .. 2024-06-14);
- the decree-09 month 2025-01 (2024-12-15 .. 2025-01-14, across a year boundary);
- the decree-09 quarter 2025-Q1 (2024-12-15 .. 2025-03-14), which holds the data cut.

Every row and column of ``mart.rpt_service_indicators``, ``mart.rpt_form06``, ``mart.rpt_progress``
(with ``rejected_at_intake``), ``mart.rpt_uncollected_results`` and ``mart.rpt_late_acceptance`` is
compared with :mod:`tests.oracle766`, which computes them independently, record by record, from the
simulator's own records (not through the project's SQL). Integers must be equal; a rate must equal
numerator / denominator.

Between two extractions the simulator moves on (``Dataset.advance``): dossiers change status, late
payments arrive; the warehouse must count the latest version of each dossier and the payments as
they stand at the data cut.
"""

from __future__ import annotations

import csv
import inspect
import math
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from simulator.dataset import Dataset, generate
from simulator.server import start_server
from tasks import pipeline, reports
from tasks.calendar import calendar_span, load_calendar
from tasks.settings import PROJECT_ROOT, Settings
from tasks.source_api import SourceClient
from tasks.warehouse import connect, upgrade
from tests import oracle766 as O

TOKEN = "official-figures-token"
REFERENCE_DIR = PROJECT_ROOT / "reference"
SEED = 766
N_DOSSIERS = 5000
DATA_START, DATA_END = date(2024, 1, 1), date(2025, 2, 28)
ADVANCE_TO = datetime(2025, 3, 12, 2, 0)
#: (period text, cut, expected start, expected end)
PERIODS = (
    ("2024-03", "calendar", date(2024, 3, 1), date(2024, 3, 31)),
    ("2024-H1", "decree-09", date(2023, 12, 15), date(2024, 6, 14)),
    ("2025-01", "decree-09", date(2024, 12, 15), date(2025, 1, 14)),
    # the quarter that holds the data cut (2025-03-12): dossiers still waiting for acceptance
    ("2025-Q1", "decree-09", date(2024, 12, 15), date(2025, 3, 14)),
)
FLAG_LABELS = ("Thanh toán trực tuyến", "Có kết quả điện tử", "Tái sử dụng dữ liệu")

INDICATOR_COLS = ("numerator_system", "denominator_system", "rate_system", "numerator_paid_only",
                  "denominator_paid_only", "rate_paid_only", "excluded_unpaid", "excluded_result_issued",
                  "excluded_in_progress", "excluded_by_list", "unknown", "code_766", "full_score_at", "target",
                  "meets_target")
PROGRESS_COLS = ("received_total", "received_online", "received_direct", "received_postal", "carried_over",
                 "resolved_total", "resolved_before_due", "resolved_on_time", "resolved_late", "in_progress_total",
                 "in_progress_in_time", "in_progress_overdue", "on_time_rate", "rejected_at_intake")
FORM06_COLS = ("ten_linh_vuc", "received_total", "received_online", "received_direct_postal", "carried_over",
               "resolved_total", "resolved_before_due", "resolved_on_time", "resolved_late", "in_progress_total",
               "in_progress_in_time", "in_progress_overdue")
UNCOLLECTED_COLS = ("ma_tthc", "ma_don_vi", "ngay_ket_thuc_xu_ly", "days_waiting", "window_days", "over_window",
                    "fees_unpaid", "as_of")
LATE_COLS = ("ma_tthc", "ma_don_vi", "ngay_nop_ho_so", "ngay_tiep_nhan", "working_hours_waited")
RATE_COLS = {"rate_system", "rate_paid_only", "on_time_rate"}


# ----------------------------------------------------------------------------------------------
# the data
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def dataset() -> Dataset:
    """A dataset spanning 2024-01 .. 2025-02, as extracted on 2025-03-01 (first run). One per test:
    the API test moves it on (``advance``)."""
    return generate(seed=SEED, n_dossiers=N_DOSSIERS, start=DATA_START, end=DATA_END)


@pytest.fixture(autouse=True)
def _no_gx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Great Expectations validation is the record of a run, never the gate (the quarantine masks
    decide what loads), and costs ~15 s a run: these tests leave it out."""
    monkeypatch.setattr(pipeline, "_validate_with_gx", lambda *a, **k: None)


def settings_for(url: str, tmp: Path, sim_url: str | None) -> Settings:
    return Settings(source_url=sim_url, source_token=TOKEN, warehouse_url=url, page_size=1000,
                    hash_key="test-hash-key", reports_dir=tmp / "reports", inbox_dir=tmp / "inbox",
                    reference_dir=REFERENCE_DIR, http_read_timeout=20, http_backoff_max=0.1)


def extract_all(engine: Any, settings: Settings, run_id: str, *, full: bool) -> dict[str, Any]:
    out = {}
    with SourceClient.from_settings(settings) as client:
        out.update(pipeline.sync_catalogues(engine, client, settings, run_id))
        for entity in pipeline.INCREMENTAL:
            window = pipeline.extraction_window(engine, settings, entity, full_refresh=full, since=None, until=None)
            out[entity] = pipeline.extract_entity(engine, client, entity, settings=settings, run_id=run_id,
                                                  window=window)
    return out


def resolve(text: str, cut: str) -> Any:
    from tasks.clock import resolve_period

    return resolve_period(text, cut)


def publish(engine: Any, text: str, cut: str, run_id: str, reference_dir: Path = REFERENCE_DIR) -> Any:
    period = resolve(text, cut)
    return reports.publish(engine, period.start, period.end, run_id=run_id, reference_dir=reference_dir,
                           period_cut=cut, period_label=period.label)


def custom_reference(tmp: Path) -> Path:
    """The shipped reference files with registries that bite: units narrowed to a few procedures
    (every district-level unit but the industrial-zone board, which is district-level only from
    2024-07-01, so the jurisdiction's offer differs between 2024-03 and 2025-01; one listed procedure
    is not in the catalogue), a unit's own target over the jurisdiction's, 2025 targets, one more
    reuse exclusion and collection windows given by a short procedure code."""
    import shutil

    out = tmp / "reference-custom"
    shutil.copytree(REFERENCE_DIR, out)
    (out / "targets.csv").write_text(
        "ma_don_vi,indicator,year,target\n*,on_time,2024,0.95\n*,online_submission,2024,0.5\n"
        "*,reuse,2024,0.07\n000.15.31.H08,on_time,2024,0.999\n000.15.31.H08,online_submission,2025,0.2\n"
        "*,digitised,2025,0.3\n*,online_service_uptake,2025,1\n*,e_result,2025,0\n", encoding="utf-8")
    narrowed = {
        "000.15.31.H08": ("2.000815.000.00.00.H08", "1.001193.000.00.00.H08", "9.999999.000.00.00.H08"),
        "000.00.15.H08": ("2.000720.000.00.00.H08", "1.000903.000.00.00.H08"),
        "000.15.01.H08": ("1.000893.000.00.00.H08", "2.000806.000.00.00.H08"),
        "000.15.02.H08": ("1.000748.000.00.00.H08",),
        "000.15.03.H08": ("1.009994.000.00.00.H08",),
        "000.15.04.H08": ("2.000575.000.00.00.H08",),
        "000.15.05.H08": ("2.001009.000.00.00.H08",),
    }
    (out / "unit_procedures.csv").write_text(
        "ma_don_vi,ma_tthc\n" + "".join(f"{u},{p}\n" for u, ps in narrowed.items() for p in ps), encoding="utf-8")
    with (out / "reuse_exclusions.csv").open("a", encoding="utf-8") as f:
        f.write("2.000815.000.00.00.H08,Chứng thực bản sao từ bản chính\n")
    (out / "collection_windows.csv").write_text(
        "ma_tthc,days,can_cu\n2.000806.000.00.00.H08,60,Kết hôn có yếu tố nước ngoài\n"
        "1.000893.H08,10,mã rút gọn\n2.000815.H08,5,mã rút gọn\n", encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------
# comparing
# ----------------------------------------------------------------------------------------------
def _norm(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, datetime):
        return v.replace(microsecond=0, tzinfo=None)
    return v


def _same(col: str, want: Any, got: Any) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if col == "working_hours_waited":
        g = Decimal(str(got)).quantize(Decimal("0.01"))
        return g == want
    if isinstance(want, bool):
        return bool(got) == want
    if isinstance(want, float) or col in RATE_COLS:
        return math.isclose(float(got), float(want), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(want, int):
        return int(got) == want
    if isinstance(want, datetime) and isinstance(got, datetime):
        return _norm(got) == want
    if isinstance(want, date) and isinstance(got, datetime):
        return got.date() == want
    return _norm(got) == want


def compare(what: str, want: Mapping[Any, Mapping[str, Any]], got: Mapping[Any, Mapping[str, Any]],
            cols: tuple[str, ...], problems: list[str], explain: Any = None) -> None:
    """Append one line per difference: missing / extra row, or column with both values."""
    for key in sorted(set(want) - set(got), key=repr):
        problems.append(f"{what} {key}: row missing in the mart (oracle: {_short(want[key], cols)})")
    for key in sorted(set(got) - set(want), key=repr):
        problems.append(f"{what} {key}: row not expected by the oracle (mart: {_short(got[key], cols)})")
    for key in sorted(set(want) & set(got), key=repr):
        w, g = want[key], got[key]
        for col in cols:
            if col not in g:
                problems.append(f"{what}: column {col} missing in the mart")
                return
            if not _same(col, w[col], g[col]):
                hint = f" [{explain(key, col)}]" if explain else ""
                problems.append(f"{what} {key} {col}: oracle {w[col]!r}, mart {_norm(g[col])!r}{hint}")


def _short(row: Mapping[str, Any], cols: tuple[str, ...]) -> str:
    return ", ".join(f"{c}={row.get(c)!r}" for c in cols[:6])


def _cap(v: Any) -> int | None:
    return None if v is None else int(v)


def mart_rows(conn: Any, table: str, period: tuple[date, date] | None) -> list[dict[str, Any]]:
    sql = f"SELECT * FROM mart.{table}"  # fixed table names, no values
    params: dict[str, Any] = {}
    if period is not None:
        sql += " WHERE period_start = :a AND period_end = :b"
        params = {"a": period[0], "b": period[1]}
    return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def check_publication(engine: Any, pub: Any, fig: O.Figures, label: str, problems: list[str]) -> None:
    period = (pub.period_start, pub.period_end)
    with engine.connect() as c:
        si = {(r["ma_don_vi"], _cap(r["cap_don_vi"]), r["indicator"]): r
              for r in mart_rows(c, "rpt_service_indicators", period)}
        pr = {(r["ma_don_vi"], _cap(r["cap_don_vi"])): r for r in mart_rows(c, "rpt_progress", period)}
        f06 = {(_cap(r["cap_don_vi"]), r["ma_linh_vuc"]): r for r in mart_rows(c, "rpt_form06", period)}
        late = {r["ma_ho_so"]: r for r in mart_rows(c, "rpt_late_acceptance", period)}
        unc = {r["ma_ho_so"]: r for r in mart_rows(c, "rpt_uncollected_results", None)}
    compare(f"[{label}] rpt_service_indicators", fig.indicators, si, INDICATOR_COLS, problems)
    compare(f"[{label}] rpt_progress", fig.progress, pr, PROGRESS_COLS, problems)
    compare(f"[{label}] rpt_form06", fig.form06, f06, FORM06_COLS, problems)

    def late_hint(key: str, col: str) -> str:
        return f"{fig.late_acceptance[key]['_seconds']} working seconds"

    compare(f"[{label}] rpt_late_acceptance", fig.late_acceptance, late, LATE_COLS, problems, late_hint)
    compare(f"[{label}] rpt_uncollected_results", fig.uncollected, unc, UNCOLLECTED_COLS, problems)
    # a rate is its numerator over its denominator, in the mart itself too
    for key, r in si.items():
        for kind in ("system", "paid_only"):
            num, den, rate = r[f"numerator_{kind}"], r[f"denominator_{kind}"], r[f"rate_{kind}"]
            want = None if not den else int(num) / int(den)
            if not _same("rate", want, rate):
                problems.append(f"[{label}] rpt_service_indicators {key} rate_{kind} {rate!r} != {num}/{den}")


def fail_on(problems: list[str], limit: int = 60) -> None:
    if problems:
        shown = "\n".join(problems[:limit])
        more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
        pytest.fail(f"{len(problems)} differences between the mart and the oracle:\n{shown}{more}", pytrace=False)


def assert_not_trivial(figs: Mapping[str, O.Figures], *, expect_unknown: bool) -> None:
    """The oracle's figures must exercise every indicator, else the comparison proves little."""
    for code, _c7, _full in O.INDICATORS:
        rows = [r for f in figs.values() for (u, _lev, c), r in f.indicators.items() if c == code]
        assert any(r["numerator_system"] > 0 and r["denominator_system"] > 0 for r in rows) or expect_unknown, \
            f"{code}: no nonzero numerator and denominator in any period"
        assert any(r["numerator_system"] < r["denominator_system"] for r in rows) or expect_unknown, \
            f"{code}: every rate is 100 %"
    star = [r for f in figs.values() for (u, _l, _c), r in f.indicators.items() if u == O.JURISDICTION]
    assert any(r["excluded_unpaid"] > 0 for r in star), "no dossier left out by the paid-only restriction"
    for label, f in figs.items():
        assert f.population > 100, f"{label}: only {f.population} dossiers received"
        assert len(f.progress) > 5 and len(f.form06) > 5, label
    assert any(r["rejected_at_intake"] > 0 for f in figs.values() for r in f.progress.values())
    assert any(r["carried_over"] > 0 for f in figs.values() for r in f.form06.values())
    assert any(r["in_progress_total"] > 0 for f in figs.values() for r in f.form06.values())
    assert any(f.late_acceptance for f in figs.values()), "no late acceptance in any period"
    assert any(f.uncollected for f in figs.values()), "no uncollected result"
    assert any(r["over_window"] for f in figs.values() for r in f.uncollected.values()), "no result past its window"
    assert any(r["over_window"] is False for f in figs.values() for r in f.uncollected.values())
    assert any(r["excluded_by_list"] > 0 for f in figs.values() for r in f.indicators.values()) or expect_unknown
    assert any(r["target"] is not None for f in figs.values() for r in f.indicators.values())
    assert any(r["ngay_tiep_nhan"] is None for f in figs.values() for r in f.late_acceptance.values()), \
        "no dossier still waiting for acceptance at the data cut"
    unknown = sum(r["unknown"] for f in figs.values() for r in f.indicators.values())
    if expect_unknown:
        assert unknown > 0, "a file without the flag columns must leave some dossiers unknown"
    else:
        assert unknown == 0, f"the API carries every list and flag, yet {unknown} unknown"


def oracle(ds_records: dict[str, list[dict[str, Any]]], period: tuple[date, date], as_of: datetime,
           reference_dir: Path = REFERENCE_DIR) -> O.Figures:
    return O.compute(dossiers=ds_records["dossiers"], payments=ds_records["payments"],
                     procedures=ds_records["procedures"], units=ds_records["units"], period=period, as_of=as_of,
                     reference=O.read_reference(reference_dir), calendar=O.WorkingDays(reference_dir))


# ----------------------------------------------------------------------------------------------
# the periods themselves
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "cut", "start", "end"), PERIODS)
def test_the_periods_resolve_as_the_spec_says(text: str, cut: str, start: date, end: date) -> None:
    p = resolve(text, cut)
    assert (p.start, p.end, p.label, p.cut) == (start, end, text, cut)


# ----------------------------------------------------------------------------------------------
# API: every figure of three periods equals the oracle's
# ----------------------------------------------------------------------------------------------
def test_official_figures_equal_the_oracle(dataset: Dataset, warehouse_url: str, tmp_path: Path) -> None:
    engine = connect(warehouse_url)
    try:
        upgrade(engine)
        with start_server(dataset, token=TOKEN) as sim:
            settings = settings_for(warehouse_url, tmp_path, sim.url)
            load_calendar(engine, *calendar_span(), settings.reference_dir)
            run1 = pipeline.new_run_id("golden")
            first = extract_all(engine, settings, run1, full=True)
            # the source moves on: statuses, hand-overs, late payments, new dossiers
            dataset_changes = dataset.advance(400, now=ADVANCE_TO, seed=3)
            run2 = pipeline.new_run_id("golden")
            second = extract_all(engine, settings, run2, full=False)
        for res in (*first.values(), *second.values()):
            assert res.rows_quarantined == 0, f"{res.entity}: {res.rows_quarantined} rows quarantined"
        assert second["dossiers"].rows_read > 0, dataset_changes

        records = {e: dataset.records(e) for e in ("dossiers", "payments", "procedures", "units")}
        as_of = O.data_cut(records["dossiers"], records["payments"])
        problems: list[str] = []
        figs: dict[str, O.Figures] = {}
        for text, cut, start, end in PERIODS:
            label = f"{text} {cut}"
            pub = publish(engine, text, cut, run2)
            assert (pub.period_start, pub.period_end) == (start, end)
            assert pub.as_of == as_of, f"{label}: data cut {pub.as_of}, expected {as_of}"
            figs[label] = oracle(records, (start, end), as_of)
            check_publication(engine, pub, figs[label], label, problems)
        assert_not_trivial(figs, expect_unknown=False)
        # the same data under registries that narrow, override and exclude
        custom = custom_reference(tmp_path)
        for text, cut, start, end in (PERIODS[0], PERIODS[2]):
            label = f"{text} {cut} custom reference"
            pub = publish(engine, text, cut, run2, reference_dir=custom)
            fig = oracle(records, (start, end), as_of, reference_dir=custom)
            check_publication(engine, pub, fig, label, problems)
            figs[label] = fig
        custom_rows = [r for k, f in figs.items() if "custom" in k for r in f.indicators.values()]
        assert any(r["meets_target"] is False for r in custom_rows) and any(r["meets_target"] for r in custom_rows)
        stars = {k: f.indicators[(O.JURISDICTION, None, "online_service_uptake")]["denominator_system"]
                 for k, f in figs.items()}
        assert len(set(stars.values())) > 1, f"the narrowing changes no jurisdiction offer: {stars}"
        fail_on(problems)
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------------
# files without the flag columns: unknown flags are left out of numerator and denominator
# ----------------------------------------------------------------------------------------------
def _drop_columns(src: Path, dst: Path, labels: tuple[str, ...]) -> None:
    """Copy a comma CSV export without the columns whose header cell is one of ``labels``."""

    def norm(v: str) -> str:
        return " ".join(unicodedata.normalize("NFC", v).replace("\u00a0", " ").split()).casefold()

    with src.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    wanted = {norm(x) for x in labels}
    drop = {j for j, v in enumerate(rows[0]) if norm(v) in wanted}
    assert len(drop) == len(labels), f"columns {labels} not found in {src.name}: {rows[0]}"
    with dst.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([[v for j, v in enumerate(r) if j not in drop] for r in rows])


def export_without_flags(ds: Dataset, out: Path) -> tuple[Path, Path, str]:
    """The dossier list without the three Có/Không columns and the payment list, as plain CSV.
    Uses the simulator's own option when it has one, else drops the columns from its export."""
    from simulator.export import export_files

    params = inspect.signature(export_files).parameters
    if "flags" in params:
        paths = export_files(ds, out, layouts=("plain",), formats=("csv",), flags=False)
        by_name = {p.name: p for p in paths}
        how = "export_files(flags=False)"
        dossiers = by_name["dossiers_plain.csv"]
    else:
        paths = export_files(ds, out / "full", layouts=("plain",), formats=("csv",))
        by_name = {p.name: p for p in paths}
        dossiers = out / "so_theo_doi_khong_co.csv"
        _drop_columns(by_name["dossiers_plain.csv"], dossiers, FLAG_LABELS)
        how = "columns dropped by the test (the simulator's export has no option for it)"
    with dossiers.open(encoding="utf-8-sig") as f:
        header = f.readline()
    assert not any(unicodedata.normalize("NFC", lab).casefold() in unicodedata.normalize("NFC", header).casefold()
                   for lab in FLAG_LABELS), header
    return dossiers, by_name["payments_plain.csv"], how


@pytest.mark.slow_on_postgres
def test_official_figures_from_files_without_flag_columns(dataset: Dataset, warehouse_url: str,
                                                          tmp_path: Path) -> None:
    from tasks.inbox import ingest_file

    dossiers_csv, payments_csv, how = export_without_flags(dataset, tmp_path / "exports")
    engine = connect(warehouse_url)
    try:
        upgrade(engine)
        with start_server(dataset, token=TOKEN) as sim:  # the catalogues still come from the API
            settings = settings_for(warehouse_url, tmp_path, sim.url)
            load_calendar(engine, *calendar_span(), settings.reference_dir)
            run_id = pipeline.new_run_id("golden-files")
            with SourceClient.from_settings(settings) as client:
                pipeline.sync_catalogues(engine, client, settings, run_id)
        for path in (dossiers_csv, payments_csv):
            o = ingest_file(engine, path, settings=settings, run_id=run_id)
            assert o.status == "loaded", o.message
            assert o.rows_quarantined == 0, f"{path.name}: {o.rows_quarantined} rows quarantined ({how})"

        api = {e: dataset.records(e) for e in ("dossiers", "payments", "procedures", "units")}
        records = {**api, "dossiers": [O.file_view(d, with_flags=False) for d in api["dossiers"]]}
        as_of = O.data_cut(records["dossiers"], records["payments"])
        problems: list[str] = []
        figs: dict[str, O.Figures] = {}
        for text, cut, start, end in PERIODS:
            label = f"files {text} {cut}"
            pub = publish(engine, text, cut, run_id)
            assert pub.as_of == as_of, f"{label}: data cut {pub.as_of}, expected {as_of}"
            figs[label] = oracle(records, (start, end), as_of)
            check_publication(engine, pub, figs[label], label, problems)
        assert_not_trivial(figs, expect_unknown=True)
        fail_on(problems)
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------------
# the oracle's own rules, on hand-made records
# ----------------------------------------------------------------------------------------------
def _d(**kw: Any) -> dict[str, Any]:
    base = {"MaHoSo": "X-1", "MaTTHC": "P1", "MaDonVi": "U1", "TrangThaiHoSo": 4, "KenhThucHien": 2,
            "NgayNopHoSo": "20240304080000", "NgayTiepNhan": "20240304090000", "NgayHenTra": "20240308170000",
            "NgayKetThucXuLy": None, "NgayTra": None, "NgayTuChoi": None, "DuocThanhToanTrucTuyen": 0,
            "TaiLieuNop": [], "DanhSachGiayToKetQua": [], "DanhSachLePhi": [], "DanhSachHoSoBoSung": [],
            "NgayCapNhat": "20240305000000"}
    base.update(kw)
    return base


_PROC = {"P1": {"MaTTHC": "P1", "KetQuaGiay": 1, "CoPhiLePhi": 1, "MucDoDVC": 4, "CoThanhToanTrucTuyen": 1,
                "MaLinhVuc": "L", "TenLinhVuc": "L", "CapThucHien": [3]}}


def test_oracle_rule_on_time_at_period_end() -> None:
    pe = date(2024, 3, 31)
    sup = lambda a, b: {"NgayBoSung": a, "NgayTiepNhanBoSung": b}  # noqa: E731
    # in progress, due 03-08, period ends 03-31: late
    assert O.on_time_at_period_end(O.make_dossier(_d(), _PROC, []), pe) is False
    # a supplement asked on 03-06 and not back by the period's end: judged on 03-06, on time
    d = O.make_dossier(_d(DanhSachHoSoBoSung=[sup("20240306100000", "20240402080000")]), _PROC, [])
    assert O.on_time_at_period_end(d, pe) is True
    # two rounds asked by E: late whatever the dates
    d = O.make_dossier(_d(TrangThaiHoSo=10, NgayKetThucXuLy="20240307100000", DanhSachHoSoBoSung=[
        sup("20240305100000", "20240305150000"), sup("20240306100000", "20240306150000")]), _PROC, [])
    assert O.on_time_at_period_end(d, pe) is False
    # the second round asked after E does not count
    d = O.make_dossier(_d(TrangThaiHoSo=10, NgayKetThucXuLy="20240307100000", DanhSachHoSoBoSung=[
        sup("20240305100000", "20240305150000"), sup("20240308100000", None)]), _PROC, [])
    assert O.on_time_at_period_end(d, pe) is True
    # withdrawn late: late (no form-06 exemption); no NgayHenTra: on time
    d = O.make_dossier(_d(TrangThaiHoSo=7, NgayKetThucXuLy="20240311100000"), _PROC, [])
    assert O.on_time_at_period_end(d, pe) is False
    assert O.on_time_at_period_end(O.make_dossier(_d(NgayHenTra=None), _PROC, []), pe) is True
    # a file record: rounds unknown
    assert O.on_time_at_period_end(O.make_dossier(O.file_view(_d()), _PROC, []), pe) is None


def test_oracle_rule_three_valued_membership() -> None:
    pe = date(2024, 3, 31)
    fee = lambda g: {"MaPhiLePhi": "F", "Gia": g}  # noqa: E731
    d = O.make_dossier(_d(DanhSachLePhi=[fee(0), fee(None)]), _PROC, [])
    assert O.dossier_indicator("online_payment", d, pe) == (False, False)  # every line at 0: not a member
    d = O.make_dossier(_d(DanhSachLePhi=[fee(0), fee(5000)], DuocThanhToanTrucTuyen=2), _PROC, [])
    assert O.dossier_indicator("online_payment", d, pe) == (True, True)
    d = O.make_dossier(_d(DanhSachLePhi=[]), _PROC, [])
    assert O.dossier_indicator("online_payment", d, pe) == (True, False)  # an empty list is not "all zero"
    f = O.make_dossier(O.file_view(_d(), with_flags=False), _PROC, [])
    assert O.dossier_indicator("online_payment", f, pe) == (None, None)
    assert O.dossier_indicator("online_submission", f, pe) == (True, None)  # paper result, e-result unknown
    f = O.make_dossier(O.file_view(_d(KenhThucHien=1), with_flags=False), _PROC, [])
    assert O.dossier_indicator("online_submission", f, pe) == (True, False)  # false and unknown = false
    assert O.dossier_indicator("digitised", f, pe) == (True, None)


def test_oracle_rule_working_hours() -> None:
    cal = O.WorkingDays(REFERENCE_DIR)
    # Friday 16:00 -> Monday 08:00: 1 h on Friday + 1 h on Monday
    assert cal.working_seconds(datetime(2024, 3, 8, 16, 0), datetime(2024, 3, 11, 8, 0)) == 2 * 3600
    # lunch break and the evening do not count; a submission at night counts from 07:00
    assert cal.working_seconds(datetime(2024, 3, 11, 11, 0), datetime(2024, 3, 11, 14, 0)) == 3600
    assert cal.working_seconds(datetime(2024, 3, 11, 20, 0), datetime(2024, 3, 12, 9, 0)) == 2 * 3600
    # 30 April / 1 May 2024 are holidays; Saturday 4 May 2024 is a make-up working day
    assert cal.working_seconds(datetime(2024, 4, 30, 7, 0), datetime(2024, 5, 2, 7, 0)) == 0
    assert cal.is_working(date(2024, 5, 4)) and not cal.is_working(date(2024, 5, 5))
    assert O.hours_2dp(8 * 3600 + 18) == Decimal("8.01")

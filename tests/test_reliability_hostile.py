"""Hostile input: property-based tests (hypothesis) of the parsers, the checks and the loader.

Every input ends as loaded rows, quarantined rows with a reason, or a clear file-level error;
never an unhandled exception, never a silently dropped row:

- API pages: records as arbitrary JSON built from real simulator records with fields replaced by
  wrong types, huge strings, control characters, NFC/NFD mixes, impossible dates (31/02/2024),
  negative and absurd amounts, formula text, duplicate keys with conflicting content, non-objects.
  They go through the real path (``pipeline.process_records``: normalise -> checks -> one load
  transaction into DuckDB) and the warehouse is read back: rows read = loaded + quarantined, each
  quarantined row has a rule, a detail and its raw record.
- Files: generated .xlsx and CSV exports (hostile cells, random headers) and random bytes through
  ``source_files.parse_file``: a :class:`FileFormatError` naming the file, or records (data rows =
  records + counted skipped rows) that then normalise and check with the same invariant.
- Workbook: text like ``=HYPERLINK(...)`` in the warehouse stays text (type 's') in the .xlsx.

Example counts: ``DVC_HYPOTHESIS_EXAMPLES`` (default 40 per test; ``make test-all`` runs the slow
variants with 500).
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import unicodedata
from datetime import date
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.dataset import generate
from tasks import pipeline
from tasks.normalize import normalize
from tasks.quality import CheckContext, check
from tasks.settings import Settings
from tasks.source_files import DOSSIER_COLUMNS, PAYMENT_COLUMNS, FileFormatError, parse_file
from tasks.warehouse import connect, upgrade

N = int(os.environ.get("DVC_HYPOTHESIS_EXAMPLES", "40"))
N_SLOW = 500
HASH_KEY = b"hostile-hash-key"
FORMULA = '=HYPERLINK("http://evil.example/x","bấm vào đây")'

_DS = generate(seed=5, n_dossiers=120, start=date(2024, 1, 1), end=date(2024, 2, 28))
TEMPLATES = {e: [dict(r) for r in itertools.islice(_DS.records(e), 40)] for e in
             ("dossiers", "payments", "procedures", "units")}
KEY_FIELDS = {"dossiers": ("MaHoSo",), "payments": ("Ma",), "procedures": ("MaTTHC",), "units": ("MaDonVi", "HieuLucTu")}

# ---------------------------------------------------------------------------------------------
# hostile values
# ---------------------------------------------------------------------------------------------
_viet = "Ủy ban nhân dân xã Phước Hòa — Hồ sơ đất đai"
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "x" * 100_000, "Đ" * 20_000, "\x00\x01\x02\x1b[31m\x7f", "a\u202eb\u200b\ufeff", "\ud7ff\ue000\U0010ffff",
        unicodedata.normalize("NFC", _viet), unicodedata.normalize("NFD", _viet),
        unicodedata.normalize("NFC", _viet)[:10] + unicodedata.normalize("NFD", _viet)[10:],
        FORMULA, "=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=0", "NULL", "None", "", " ",
        "'; DROP TABLE core.dossiers; --", "{\"a\": 1}", "\\N", "\r\n\r\n",
    ]),
)
bad_dates = st.sampled_from([
    "31/02/2024", "30/02/2024 10:00", "20240231000000", "20241301000000", "20240101250000", "2024-02-31",
    "00000000000000", "99999999999999", "19000101000000", "21991231235959", "2024", "202401011200",
    "20240101120000.5", "-20240101120000", "２０２４０１０１１２００００", "20240101120000Z",
])
absurd_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([-1, 0, -0.0, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 2**63, -(2**63) - 1,
                     "1.234.000", "-5", "1e400", "12abc", "0x1F", " 42 ", "١٢٣"]),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_leaf = st.one_of(st.none(), st.booleans(), absurd_numbers, hostile_text, bad_dates)
json_any = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), c, max_size=3)),
                        max_leaves=8)


@st.composite
def hostile_records(draw, entity: str) -> list:
    """A page of records: real records with some fields replaced, duplicated keys with
    conflicting content, extra fields, missing fields, and the odd non-object."""
    templates = TEMPLATES[entity]
    n = draw(st.integers(min_value=0, max_value=12))
    records: list = []
    for _ in range(n):
        if draw(st.integers(0, 19)) == 0:
            records.append(draw(json_any))  # not an object at all
            continue
        rec = dict(draw(st.sampled_from(templates)))
        for field_name in draw(st.lists(st.sampled_from(sorted(rec) + ["Extra", "NgayCapNhat"]), max_size=5)):
            rec[field_name] = draw(st.one_of(json_any, bad_dates, absurd_numbers, hostile_text))
        for field_name in draw(st.lists(st.sampled_from(sorted(rec)), max_size=2)):
            rec.pop(field_name, None)
        records.append(rec)
    if records and draw(st.booleans()):  # the same key again, with conflicting content
        first = next((r for r in records if isinstance(r, dict)), None)
        if first is not None:
            twin = dict(draw(st.sampled_from(templates)))
            for k in KEY_FIELDS[entity]:
                if k in first:
                    twin[k] = first[k]
            twin["NgayCapNhat"] = draw(st.sampled_from([first.get("NgayCapNhat"), "20240105080000", "31/02/2024"]))
            records.append(twin)
    return records


def _frame_invariant(entity: str, records: list) -> tuple[int, int]:
    """normalise + check: every row read is loadable or quarantined with a rule and a detail."""
    norm = normalize(entity, records, hash_key=HASH_KEY)
    assert norm.rows_received == len(records)
    assert norm.rows_read == len(norm.core) == norm.rows_received - norm.rows_duplicate
    outcome = check(entity, norm.core, CheckContext())
    issues = norm.issues
    if len(outcome.issues):
        to_ours = dict(zip(outcome.row_keys, norm.core["record_key"], strict=True))
        mapped = outcome.issues.assign(record_key=outcome.issues["record_key"].map(to_ours))
        issues = pd.concat([issues, mapped], ignore_index=True) if len(issues) else mapped
    critical = issues[issues["severity"] == "critical"] if len(issues) else issues
    bad = set(critical["record_key"]) if len(critical) else set()
    assert bad <= set(norm.core["record_key"]), "an issue names a row that was not read"
    if len(critical):
        assert critical["rule"].notna().all() and (critical["rule"].astype(str) != "").all()
        assert critical["detail"].notna().all() and (critical["detail"].astype(str).str.len() > 0).all()
    loaded = int((~norm.core["record_key"].isin(bad)).sum())
    assert loaded + len(bad) == norm.rows_read
    return loaded, len(bad)


# ---------------------------------------------------------------------------------------------
# API pages -> normalise -> checks -> load (DuckDB), read back
# ---------------------------------------------------------------------------------------------
class _Loader:
    def __init__(self, path: Path) -> None:
        self.engine = connect(f"duckdb:///{path}")
        self.reports = path.parent / "reports"  # never the current folder
        upgrade(self.engine)
        self.counter = itertools.count()
        self.tried = 0

    def load(self, entity: str, records: list) -> None:
        source = f"h{next(self.counter)}"
        s = Settings(source_name=source, hash_key="hostile-hash-key", reports_dir=self.reports)
        res = pipeline.EntityResult(entity)
        res.data_docs = ""  # GX data docs are not what is tested here
        ctx = pipeline.check_context(self.engine, source, entity, s, pipeline.now_local())
        r = pipeline.process_records(self.engine, entity, records, settings=s, run_id=f"run-{source}",
                                     result=res, context=ctx)
        assert r.rows_received == len(records) and r.reconciled
        with self.engine.connect() as c:
            core = c.execute(sa.text(f"SELECT count(*) FROM core.{entity} WHERE source = :s"), {"s": source}).scalar()
            q = c.execute(sa.text(
                "SELECT count(DISTINCT record_key), count(*) FILTER (WHERE rule IS NULL OR rule = '' OR detail IS NULL "
                "OR detail = '' OR raw_record IS NULL) FROM dq.quarantine WHERE source = :s AND entity = :e"),
                {"s": source, "e": entity}).one()
            summary = c.execute(sa.text(
                "SELECT rows_read, rows_loaded, rows_quarantined FROM dq.run_summary WHERE source = :s"),
                {"s": source}).one()
        assert core == r.rows_loaded, "a loadable row is not in core"
        assert q[0] == r.rows_quarantined, "a quarantined row is not in dq.quarantine"
        assert q[1] == 0, "a quarantine row lacks its rule, detail or raw record"
        assert tuple(summary) == (r.rows_read, r.rows_loaded, r.rows_quarantined)
        self.tried += len(records)


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    lo = _Loader(tmp_path_factory.mktemp("hostile") / "wh.duckdb")
    yield lo
    print("hostile-api-records-loaded-through-warehouse", lo.tried)
    lo.engine.dispose()


ENTITY = st.sampled_from(["dossiers", "payments", "procedures", "units"])


@settings(max_examples=N * 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_api_pages_frame_invariant(data):
    entity = data.draw(ENTITY)
    _frame_invariant(entity, data.draw(hostile_records(entity)))


@settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_api_pages_load(loader, data):
    entity = data.draw(ENTITY)
    loader.load(entity, data.draw(hostile_records(entity)))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@settings(max_examples=N_SLOW, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_api_pages_load_many(loader, data):
    entity = data.draw(ENTITY)
    loader.load(entity, data.draw(hostile_records(entity)))


def test_named_adversarial_page_loads_or_quarantines_each_row(loader):
    """The cases the issue names, each present for sure (not left to chance)."""
    base = TEMPLATES["dossiers"]
    recs = [dict(base[0], NgayTiepNhan="31/02/2024"), dict(base[1], TrangThaiHoSo="chín"),
            dict(base[2], TenTTHC="x" * 100_000), dict(base[3], CanBoXuLy="\x00\x07\x1b"),
            dict(base[4], TenDonVi=unicodedata.normalize("NFD", _viet)), dict(base[5], TenTTHC=FORMULA),
            dict(base[6], NgayCapNhat=None), dict(base[7], KenhThucHien=[1, 2]), 42, None,
            dict(base[8]), dict(base[8], TrangThaiHoSo=99, NgayCapNhat="20990101000000")]
    norm = normalize("dossiers", recs, hash_key=HASH_KEY)
    rules = set(norm.issues["rule"])
    assert {"parse_ngay_tiep_nhan", "parse_trang_thai", "required_ngay_cap_nhat", "parse_kenh_thuc_hien"} <= rules
    loader.load("dossiers", recs)
    pays = [dict(p, SoTien=v) for p, v in zip(TEMPLATES["payments"], [-5, 10**25, "1e400", float("nan")], strict=False)]
    _frame_invariant("payments", pays)
    loader.load("payments", pays)


# ---------------------------------------------------------------------------------------------
# files: generated xlsx/csv and random bytes -> parse_file
# ---------------------------------------------------------------------------------------------
cell_value = st.one_of(st.none(), hostile_text, bad_dates, absurd_numbers.filter(lambda v: not isinstance(v, float)),
                       st.sampled_from(["Đã trả kết quả", "Trực tuyến", "Có", "Không", "Đã thanh toán", "1.234.000",
                                        "15/01/2024 08:30", "31/02/2024", "Tổng cộng", "I. Cấp huyện"]))


@st.composite
def export_table(draw) -> tuple[list[list], int]:
    cols = draw(st.sampled_from([DOSSIER_COLUMNS, PAYMENT_COLUMNS]))
    chosen = draw(st.lists(st.sampled_from(cols), min_size=0, max_size=len(cols), unique_by=lambda c: c.field))
    header = [draw(st.sampled_from(c.labels)) for c in chosen]
    if draw(st.booleans()):
        header = [unicodedata.normalize(draw(st.sampled_from(["NFC", "NFD"])), h).upper() for h in header]
    if draw(st.integers(0, 4)) == 0:
        header.append(draw(hostile_text))  # an unknown column
    titles = [[draw(hostile_text)] for _ in range(draw(st.integers(0, 3)))]
    rows = [[draw(cell_value) for _ in header] for _ in range(draw(st.integers(0, 15)))]
    return titles + [header] + rows, len(rows)


def _write(path: Path, table: list[list], kind: str) -> None:
    if kind == "csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerows([["" if v is None else v for v in row] for row in table])
        return
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in table:
        ws.append([v if not isinstance(v, str) else "".join(ch for ch in v if ch >= " " or ch in "\t\n\r")[:32000]
                   for v in row])
    wb.save(path)


def _check_file(path: Path, data_rows: int | None) -> str:
    try:
        parsed = parse_file(path)
    except FileFormatError as exc:
        assert exc.message and str(path) in str(exc), str(exc)
        return "file-error"
    if data_rows is not None:
        assert len(parsed.records) + parsed.rows_skipped == data_rows, (parsed.skipped, data_rows)
    if parsed.records:
        _frame_invariant(parsed.entity, [{k: v for k, v in r.items() if k != "_row_number"} for r in parsed.records])
    return "records"


def _check_export(tmp_path_factory, table, kind) -> None:
    """Write a generated export table as a clerk's file and check how it is handled."""
    rows, _ = table
    path = tmp_path_factory.mktemp("files") / f"export.{kind}"
    _write(path, rows, kind)
    _check_file(path, None)


@settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))
@given(table=export_table(), kind=st.sampled_from(["csv", "xlsx"]))
def test_hostile_export_files(tmp_path_factory, table, kind):
    _check_export(tmp_path_factory, table, kind)


@settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))
@given(blob=st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.sampled_from([b"PK\x03\x04garbage", b"\xef\xbb\xbf", b"\xff\xfeM\x00", b"<html><body>x",
                                       b"M\xc3\xa3 h\xe1\xbb\x93 s\xc6\xa1\n"])))
def test_random_bytes_as_a_file(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("blob") / "upload.csv"
    path.write_bytes(blob)
    _check_file(path, None)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@settings(max_examples=N_SLOW, deadline=None, suppress_health_check=list(HealthCheck))
@given(table=export_table(), kind=st.sampled_from(["csv", "xlsx"]))
def test_hostile_export_files_many(tmp_path_factory, table, kind):
    _check_export(tmp_path_factory, table, kind)


# damaged workbooks (issue 14): bytes flipped anywhere in a real .xlsx, stored or deflated, so the
# damage lands in the zip structure, a CRC, a deflate stream or the XML of any part
_GOOD_XLSX = Path(__file__).parent / "fixtures" / "files" / "01_dossiers_titles_sections.xlsx"


def _stored_copy() -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(_GOOD_XLSX) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    return out.getvalue()


def _large_stored() -> bytes:
    """A 2,000-row export stored uncompressed: its sheet is larger than openpyxl's first read, so
    damage near its end shows while the rows are read."""
    import tempfile

    from tests.test_source_files import good_rows, make_xlsx, rezip

    with tempfile.TemporaryDirectory() as tmp:
        base = make_xlsx(Path(tmp) / "base.xlsx", good_rows("LARGE", 2000))
        return rezip(base, Path(tmp) / "stored.xlsx", stored=True).read_bytes()


_WORKBOOKS = {"deflated": _GOOD_XLSX.read_bytes(), "stored": _stored_copy(), "large": _large_stored()}


@st.composite
def damaged_workbook(draw) -> bytes:
    kind = draw(st.sampled_from(sorted(_WORKBOOKS)))
    blob = bytearray(_WORKBOOKS[kind])
    for _ in range(draw(st.integers(1, 4))):
        # the large one: mostly in the second half of its sheet
        low = len(blob) // 2 if kind == "large" and draw(st.booleans()) else 0
        at = draw(st.integers(low, len(blob) - 1))
        blob[at] = draw(st.sampled_from([0, 0x3C, 0x26, 0xFF, (blob[at] + 1) % 256, ord("7")]))
    if draw(st.integers(0, 4)) == 0:
        del blob[draw(st.integers(len(blob) // 2, len(blob) - 1)):]  # truncated upload
    return bytes(blob)


@settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))
@given(blob=damaged_workbook())
def test_damaged_workbook_is_read_or_refused_with_a_reason(tmp_path_factory, blob):
    """Never an unhandled exception (BadZipFile, a bad CRC, ParseError, zlib.error...): records,
    or a FileFormatError naming the file."""
    path = tmp_path_factory.mktemp("damaged") / "so_theo_doi.xlsx"
    path.write_bytes(blob)
    _check_file(path, None)


# ---------------------------------------------------------------------------------------------
# formula-like text stays text in the workbook
# ---------------------------------------------------------------------------------------------
def test_formula_text_stays_text_in_the_workbook(tmp_path):
    from tasks.reports import publish
    from tasks.settings import PROJECT_ROOT
    from tasks.workbook import write_workbook

    engine = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    upgrade(engine)
    s = Settings(source_name="default", hash_key="k", reports_dir=tmp_path)
    evil = {"units": "TenDonVi", "procedures": "TenTTHC", "dossiers": "CanBoXuLy"}
    for entity in ("units", "procedures", "dossiers", "payments"):
        records = [dict(r) for r in _DS.records(entity)]
        if entity in evil:
            for r in records:
                r[evil[entity]] = FORMULA
        res = pipeline.EntityResult(entity)
        res.data_docs = ""
        ctx = pipeline.check_context(engine, "default", entity, s, pipeline.now_local())
        pipeline.process_records(engine, entity, records, settings=s, run_id="formula", result=res, context=ctx)
    pub = publish(engine, date(2024, 1, 1), date(2024, 1, 31), run_id="formula",
                  reference_dir=PROJECT_ROOT / "reference")
    path = write_workbook(engine, pub.publication_id, tmp_path / "wb.xlsx")
    wb = openpyxl.load_workbook(path)
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if isinstance(c.value, str)]
    planted = [c for c in cells if c.value == FORMULA]
    assert planted, "the formula text never reached the workbook"
    assert all(c.data_type == "s" for c in planted), [(c.coordinate, c.data_type) for c in planted]
    # the workbook's own formulas are its totals (SUM, COUNTIF, IF over its cells), never the data's text
    formulas = [c.value for c in cells if c.data_type == "f"]
    assert all(re.fullmatch(r"=(SUM|COUNTIF|IF)\(.*\)", f) and "HYPERLINK" not in f for f in formulas), formulas
    engine.dispose()

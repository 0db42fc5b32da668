"""The two ways in give the same cleaned rows: the simulator's data loaded through its HTTP API
and the same data exported as the clerk's ugly Excel/CSV files (title rows, two-row headers,
section and total rows, NFD labels, dotted amounts, mixed date formats) and loaded with
:func:`tasks.inbox.ingest_file` end in the same ``core.dossiers`` / ``core.payments`` on every
column a file can carry, and every column a file cannot carry is NULL (unknown), never a false
or a zero.

Every core column is classified below; a new column fails the test until someone decides how a
file carries it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from simulator.dataset import Dataset, generate
from simulator.export import export_files
from simulator.server import start_server
from tasks import pipeline
from tasks.calendar import calendar_span, load_calendar
from tasks.inbox import ingest_file
from tasks.load import LINEAGE
from tasks.settings import Settings
from tasks.source_api import SourceClient
from tasks.warehouse import connect, upgrade

TOKEN = "sim-token"
N_DOSSIERS = 1500

# --- how a file carries each core column -------------------------------------------------------
DOSSIER_SAME = ["ma_tthc", "ten_tthc", "ten_linh_vuc", "ma_don_vi", "ten_don_vi", "kenh_thuc_hien",
                "applicant_key", "applicant_key_id", "trang_thai", "ma_can_bo_xu_ly", "can_bo_xu_ly", "has_e_result", "has_reuse"]
DOSSIER_TS = ["ngay_nop_ho_so", "ngay_tiep_nhan", "ngay_hen_tra", "ngay_ket_thuc_xu_ly", "ngay_tra",
              "ngay_cap_nhat"]
DOSSIER_NULL = ["ma_linh_vuc", "loai_doi_tuong", "ngay_tu_choi", "hinh_thuc", "co_thanh_phan_so_hoa",
                "n_tai_lieu", "n_tai_lieu_tai_su_dung", "n_ket_qua", "n_bo_sung", "tong_le_phi_khai",
                # the 766 flags a file export cannot carry (no nested lists): unknown, never false
                "n_tai_lieu_so_hoa", "has_digitised", "n_tai_lieu_kho_dmqg", "has_from_national_store",
                "n_le_phi", "n_le_phi_co_gia"]
DOSSIER_OTHER = ["duoc_thanh_toan_truc_tuyen"]  # Có/Không: 1 and 2 (portal, provincial gateway) both read Có
PAYMENT_SAME = ["ma_ho_so", "so_tien", "phi", "le_phi", "trang_thai", "hinh_thuc_thanh_toan", "hinh_thuc_thu",
                "ma_giao_dich"]
PAYMENT_TS = ["ngay_yeu_cau", "ngay_thu_phi", "ngay_cap_nhat"]
PAYMENT_NULL = ["kenh_thanh_toan", "ngay_hoan_phi", "ngay_huy"]
KEYS = {"dossiers": "ma_ho_so", "payments": "ma"}
CLASSIFIED = {
    "dossiers": DOSSIER_SAME + DOSSIER_TS + DOSSIER_NULL + DOSSIER_OTHER,
    "payments": PAYMENT_SAME + PAYMENT_TS + PAYMENT_NULL,
}


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def wh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``warehouse_url``, for the heavier tests: the PostgreSQL variant runs with ``make test-all``."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'wh.duckdb'}"
    return request.getfixturevalue("pg_url")


def settings_for(url: str, tmp: Path, sim_url: str | None = None) -> Settings:
    return Settings(source_url=sim_url, source_token=TOKEN, warehouse_url=url, page_size=500,
                    hash_key="test-hash-key", reports_dir=tmp / "reports", inbox_dir=tmp / "inbox",
                    http_read_timeout=10, http_backoff_max=0.1)


def prepare(url: str, settings: Settings) -> Any:
    engine = connect(url)
    upgrade(engine)
    load_calendar(engine, *calendar_span(), settings.reference_dir)
    return engine


def core_frame(url: str, entity: str) -> pd.DataFrame:
    engine = connect(url)
    try:
        with engine.connect() as c:
            frame = pd.read_sql(sa.text(f"SELECT * FROM core.{entity}"), c)
    finally:
        engine.dispose()
    return frame.set_index(KEYS[entity]).sort_index()


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate(seed=9, n_dossiers=N_DOSSIERS)


@pytest.fixture(scope="module")
def exports(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    paths = export_files(dataset, out, layouts=("ugly",), formats=("xlsx", "csv"))
    return {p.name: p for p in paths}


@pytest.fixture(scope="module")
def exports_xls(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ugly .xlsx exports as real Excel 97-2003 (BIFF8) workbooks, converted by LibreOffice."""
    from tests.test_source_files import to_xls

    made = to_xls([exports["dossiers_ugly.xlsx"], exports["payments_ugly.xlsx"]], tmp_path_factory.mktemp("xls"))
    return {f"{stem}.xls": path for stem, path in made.items()}


@pytest.fixture(scope="module")
def exports_cp1258(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ugly CSV exports re-encoded in Windows-1258 (tone marks as combining characters)."""
    from tests.test_source_files import encode_cp1258

    out = tmp_path_factory.mktemp("cp1258")
    for name in ("dossiers_ugly.csv", "payments_ugly.csv"):
        (out / name).write_bytes(encode_cp1258(exports[name].read_text(encoding="utf-8-sig")))
    return {name: out / name for name in ("dossiers_ugly.csv", "payments_ugly.csv")}


def load_through_api(url: str, dataset: Dataset, tmp: Path) -> None:
    """Dossiers and payments through the HTTP API. No catalogue sync: the file loads have none
    either, so both ways are checked against the same context."""
    with start_server(dataset, token=TOKEN) as sim:
        settings = settings_for(url, tmp, sim.url)
        engine = prepare(url, settings)
        run_id = pipeline.new_run_id("api")
        with SourceClient.from_settings(settings) as client:
            for entity in pipeline.INCREMENTAL:
                res = pipeline.extract_entity(engine, client, entity, settings=settings, run_id=run_id,
                                              window=(None, None))
                assert res.rows_quarantined == 0 and res.rows_loaded == dataset.count(entity)
        engine.dispose()


@pytest.fixture(scope="module")
def api_load(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB warehouse loaded through the HTTP API (tests copy it, never write to it)."""
    tmp = tmp_path_factory.mktemp("api")
    load_through_api(f"duckdb:///{tmp / 'api.duckdb'}", dataset, tmp)
    return tmp / "api.duckdb"


@pytest.fixture(scope="module")
def api_core(api_load: Path) -> dict[str, pd.DataFrame]:
    """core.dossiers / core.payments of the load through the HTTP API."""
    return {e: core_frame(f"duckdb:///{api_load}", e) for e in KEYS}


def load_files(url: str, tmp: Path, files: list[Path]) -> dict[str, Any]:
    settings = settings_for(url, tmp)
    engine = prepare(url, settings)
    run_id = pipeline.new_run_id("files")
    outcomes = {}
    try:
        for path in files:
            o = ingest_file(engine, path, settings=settings, run_id=run_id)
            assert o.status == "loaded", o.message
            assert o.rows_read == o.rows_loaded + o.rows_quarantined
            outcomes[o.entity] = o
    finally:
        engine.dispose()
    return outcomes


def assert_timestamps_as_precise_as_the_file(api: pd.Series, got: pd.Series, name: str) -> None:
    """The ugly export writes each timestamp as dd/MM/yyyy, dd/MM/yyyy HH:mm, dd/MM/yyyy HH:mm:ss
    or a date cell: what loads is the API's instant cut to the precision the cell carried."""
    api, got = pd.to_datetime(api), pd.to_datetime(got)
    assert (api.isna() == got.isna()).all(), f"{name}: null where the API has a value, or the reverse"
    a, g = api[api.notna()], got[api.notna()]
    ok = (g == a) | (g == a.dt.floor("min")) | (g == a.dt.floor("D"))
    assert ok.all(), f"{name}: {int((~ok).sum())} values differ beyond the cell's precision:\n" \
                     f"{pd.DataFrame({'api': a[~ok], 'file': g[~ok]}).head()}"
    assert (g == a).mean() > 0.2, f"{name}: almost nothing kept its seconds: the comparison is too lax"


def compare(entity: str, api: pd.DataFrame, got: pd.DataFrame, *, quarantined: set[str]) -> None:
    data_cols = set(api.columns) - set(LINEAGE) - {"source"}
    assert set(CLASSIFIED[entity]) == data_cols, f"unclassified core.{entity} columns: " \
                                                 f"{data_cols ^ set(CLASSIFIED[entity])}"
    assert set(got.index) | quarantined == set(api.index) and not (set(got.index) & quarantined)
    api = api.loc[got.index]
    same = DOSSIER_SAME if entity == "dossiers" else PAYMENT_SAME
    for col in same:
        a, g = api[col], got[col]
        equal = (a.isna() & g.isna()) | (a == g).fillna(False).astype(bool)
        assert equal.all(), f"{entity}.{col}: {int((~equal).sum())} rows differ:\n" \
                            f"{pd.DataFrame({'api': a[~equal], 'file': g[~equal]}).head()}"
    for col in DOSSIER_TS if entity == "dossiers" else PAYMENT_TS:
        assert_timestamps_as_precise_as_the_file(api[col], got[col], f"{entity}.{col}")
    for col in DOSSIER_NULL if entity == "dossiers" else PAYMENT_NULL:
        assert got[col].isna().all(), f"{entity}.{col}: a file cannot carry it, yet it is " \
                                      f"{got[col].dropna().unique()[:5]}"
        assert api[col].notna().any() or col in ("ngay_hoan_phi", "ngay_huy", "ngay_tu_choi"), \
            f"{entity}.{col} is null in the API load too: the test proves nothing for it"
    if entity == "dossiers":
        paid_online = api["duoc_thanh_toan_truc_tuyen"].isin([1, 2]).astype(int)
        assert (got["duoc_thanh_toan_truc_tuyen"].astype(int) == paid_online).all()
        # booleans a file does carry are real booleans, with both values present
        for col in ("has_reuse", "has_e_result"):
            assert set(got[col].dropna().unique()) == {True, False}, col


@pytest.mark.parametrize("fmt", ["xlsx", "csv", "xls", "csv-cp1258"])
def test_file_loads_equal_api_loads_on_what_files_carry(
    fmt: str, dataset: Dataset, exports: dict[str, Path], api_core: dict[str, pd.DataFrame], wh_url: str,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Also through a real .xls and a Windows-1258 CSV of the same exports (issue 16)."""
    made = {"xls": "exports_xls", "csv-cp1258": "exports_cp1258"}
    files_of = request.getfixturevalue(made[fmt]) if fmt in made else exports
    fmt = fmt.split("-")[0]
    files = [files_of[f"dossiers_ugly.{fmt}"], files_of[f"payments_ugly.{fmt}"]]
    outcomes = load_files(wh_url, tmp_path, files)
    assert outcomes["dossiers"].rows_read == dataset.count("dossiers")
    assert outcomes["payments"].rows_read == dataset.count("payments")
    engine = connect(wh_url)
    with engine.connect() as c:
        quarantined = {
            e: {r[0] for r in c.execute(sa.text("SELECT record_key FROM dq.quarantine WHERE entity = :e"), {"e": e})}
            for e in KEYS
        }
        sources = {r[0] for r in c.execute(sa.text("SELECT DISTINCT _source FROM core.dossiers"))}
    engine.dispose()
    assert sources == {f"file:dossiers_ugly.{fmt}"}
    for entity in KEYS:
        assert len(quarantined[entity]) == outcomes[entity].rows_quarantined
        compare(entity, api_core[entity], core_frame(wh_url, entity), quarantined=quarantined[entity])


def _drop_columns(src: Path, dst: Path, labels: tuple[str, ...]) -> None:
    """Copy a semicolon CSV export without the columns whose header cell is one of ``labels``."""
    import unicodedata

    def norm(v: str) -> str:
        return " ".join(unicodedata.normalize("NFC", v).replace("\u00a0", " ").split()).casefold()

    with src.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    wanted = {norm(x) for x in labels}
    drop = {j for row in rows for j, v in enumerate(row) if norm(v) in wanted}
    assert len(drop) == len(labels), f"columns {labels} not found in {src.name}"
    with dst.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, delimiter=";").writerows([[v for j, v in enumerate(r) if j not in drop] for r in rows])


def test_a_file_without_the_flag_columns_leaves_them_unknown(
    dataset: Dataset, exports: dict[str, Path], api_core: dict[str, pd.DataFrame], duckdb_url: str, tmp_path: Path
) -> None:
    """An export without 'Tái sử dụng dữ liệu' and 'Có kết quả điện tử' loads every dossier with
    has_reuse and has_e_result NULL: unknown, never False (the API says many are True)."""
    path = tmp_path / "so_theo_doi_thieu_cot.csv"
    _drop_columns(exports["dossiers_ugly.csv"], path, ("Tái sử dụng dữ liệu", "Có kết quả điện tử"))
    out = load_files(duckdb_url, tmp_path, [path])["dossiers"]
    assert out.rows_read == N_DOSSIERS and out.rows_loaded > N_DOSSIERS * 0.9
    got = core_frame(duckdb_url, "dossiers")
    for col in ("has_reuse", "has_e_result", "n_tai_lieu", "n_tai_lieu_tai_su_dung", "n_ket_qua"):
        assert got[col].isna().all(), f"{col}: {got[col].value_counts(dropna=False).to_dict()}"
    assert api_core["dossiers"]["has_reuse"].any() and api_core["dossiers"]["has_e_result"].any()
    assert got["trang_thai"].notna().all()  # the rest of the row did load


def _bump_updated(src: Path, dst: Path, n: int, stamp: str) -> list[str]:
    """Copy a semicolon CSV export with the first ``n`` dossiers' 'Ngày cập nhật' set to ``stamp``
    (a newer version of them); returns their keys."""
    import unicodedata

    def norm(v: str) -> str:
        return " ".join(unicodedata.normalize("NFC", v).replace("\u00a0", " ").split()).casefold()

    with src.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    head = next(i for i, r in enumerate(rows) if any(norm(v) == "mã hồ sơ" for v in r))
    key_col = next(j for j, v in enumerate(rows[head]) if norm(v) == "mã hồ sơ")
    upd_col = next(j for j, v in enumerate(rows[head]) if norm(v) == "ngày cập nhật")
    bumped = []
    for r in rows[head + 2:]:
        if len(bumped) < n and len(r) > upd_col and "-" in r[key_col]:
            r[upd_col] = stamp
            bumped.append(r[key_col].strip())
    with dst.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    assert len(bumped) == n
    return bumped


def test_a_file_of_versions_already_loaded_changes_nothing_and_newer_versions_win(
    dataset: Dataset, api_load: Path, api_core: dict[str, pd.DataFrame], exports: dict[str, Path], wh_url: str,
    tmp_path: Path,
) -> None:
    """The clerk exports the whole period on a night the API is back: every version in the file is
    already in the warehouse from the API, so nothing changes (the file's copy of a version is
    poorer: no nested lists, coarser dates, Có/Không). Rows the file holds in a newer version
    (a later 'Ngày cập nhật') replace the API's, with what the file cannot carry unknown."""
    import shutil

    url = wh_url
    if url.startswith("duckdb"):  # a copy of the module's API load
        for suffix in ("", ".wal"):
            if Path(f"{api_load}{suffix}").exists():
                shutil.copy(f"{api_load}{suffix}", tmp_path / f"wh.duckdb{suffix}")
    else:
        load_through_api(url, dataset, tmp_path)
    dossiers = tmp_path / "so_theo_doi.csv"
    newer = _bump_updated(exports["dossiers_ugly.csv"], dossiers, 5, "31/12/2024 23:59:59")
    out = load_files(url, tmp_path, [dossiers, exports["payments_ugly.csv"]])
    assert out["dossiers"].rows_read == N_DOSSIERS and out["payments"].rows_quarantined == 0

    before, after = api_core["dossiers"], core_frame(url, "dossiers")
    assert set(after.index) == set(before.index)
    replaced = after.index[after["_source"] != "api"]
    assert sorted(replaced) == sorted(newer), "only the newer versions may replace the API's rows"
    assert (after.loc[newer, "ngay_cap_nhat"] == pd.Timestamp("2024-12-31 23:59:59")).all()
    assert after.loc[newer, "n_tai_lieu"].isna().all() and after.loc[newer, "has_reuse"].notna().all()
    kept = before.index.difference(pd.Index(newer))
    data = [c for c in before.columns if c not in LINEAGE]
    pd.testing.assert_frame_equal(after.loc[kept, data], before.loc[kept, data], check_dtype=False)  # NULLs in newer
    payments = core_frame(url, "payments")
    assert (payments["_source"] == "api").all()
    pd.testing.assert_frame_equal(payments[data_cols(payments)], api_core["payments"][data_cols(payments)])


def data_cols(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in LINEAGE]

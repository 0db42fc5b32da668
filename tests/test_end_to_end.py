"""End to end: simulator on loopback -> nightly flow (Prefect) -> checks -> warehouse -> reports.

The expected report figures are computed here, independently, in plain Python from the
simulator's own records and the definitions of the reports specification, section 1.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime

import pytest
import sqlalchemy as sa

from simulator.dataset import generate
from simulator.server import start_server
from tasks.warehouse import connect

P_START, P_END = date(2024, 1, 1), date(2024, 6, 30)
PAID, REFUNDED, CANCELLED, EXEMPT = "Đã thanh toán", "Đã hoàn phí", "Hủy thanh toán", "Đối tượng miễn phí"


def _ts(v) -> datetime | None:
    if v in (None, ""):
        return None
    return datetime.strptime(str(v), "%Y%m%d%H%M%S")


def _unit_level(units: list[dict], code: str, day: date) -> int | None:
    for u in units:
        if u["MaDonVi"] != code:
            continue
        since = datetime.strptime(str(u["HieuLucTu"]), "%Y%m%d").date()
        until = datetime.strptime(str(u["HieuLucDen"]), "%Y%m%d").date() if u.get("HieuLucDen") else date.max
        if since <= day <= until:
            return int(u["CapDonVi"])
    return None


def expected_figures(ds) -> dict:
    """Independent implementation of reports.md section 1 over the simulator's records."""
    dossiers = ds.records("dossiers")
    payments = ds.records("payments")
    units = ds.records("units")
    by_unit: dict[str, Counter] = defaultdict(Counter)
    late_by_level: Counter = Counter()
    for d in dossiers:
        st = int(d["TrangThaiHoSo"])
        recv = _ts(d.get("NgayTiepNhan"))
        if st in (1, 3) or recv is None:
            continue
        u = by_unit[d["MaDonVi"]]
        if P_START <= recv.date() <= P_END:
            u["received_total"] += 1
            ch = int(d["KenhThucHien"]) if d.get("KenhThucHien") not in (None, "") else 1
            u["received_online"] += ch == 2
        end = _ts(d.get("NgayKetThucXuLy"))
        if st in (7, 8, 9, 10) and end is not None and P_START <= end.date() <= P_END:
            u["resolved_total"] += 1
            due = _ts(d.get("NgayHenTra"))
            late = st != 7 and due is not None and end.date() > due.date()
            u["resolved_late"] += late
            if late:
                late_by_level[_unit_level(units, d["MaDonVi"], recv.date())] += 1
    # online payment (766 indicator 3.6), whole jurisdiction, population keyed by receipt date:
    # dossiers of fee-bearing procedures (CoPhiLePhi = 1) minus those whose declared fees are all 0;
    # hit = the dossier's own DuocThanhToanTrucTuyen in (1, 2); paid-only keeps the dossiers with
    # no financial obligation or a completed one (payment records, reports.md section 1)
    fee_bearing = {p["MaTTHC"] for p in ds.records("procedures") if int(p.get("CoPhiLePhi") or 0) == 1}
    obligations: dict[str, list[dict]] = defaultdict(list)
    for p in payments:
        if int(p.get("SoTien") or 0) > 0 and p.get("HinhThucThu") != EXEMPT and p["TrangThai"] not in (REFUNDED, CANCELLED):
            obligations[p["MaHoSo"]].append(p)
    den = num = den_paid = num_paid = 0
    for d in dossiers:
        st = int(d["TrangThaiHoSo"])
        recv = _ts(d.get("NgayTiepNhan"))
        if st in (1, 3) or recv is None or not (P_START <= recv.date() <= P_END):
            continue
        fees = d.get("DanhSachLePhi") or []
        if d["MaTTHC"] not in fee_bearing or (fees and all(int(f.get("Gia") or 0) == 0 for f in fees)):
            continue
        hit = int(d.get("DuocThanhToanTrucTuyen") or 0) in (1, 2)
        settled = all(p["TrangThai"] == PAID for p in obligations.get(d["MaHoSo"], []))
        den += 1
        num += hit
        den_paid += settled
        num_paid += hit and settled
    return {
        "by_unit": by_unit,
        "late_by_level": late_by_level,
        "online_payment": (num, den, num_paid, den_paid),
    }


@pytest.fixture(scope="module")
def dataset():
    return generate(seed=7, n_dossiers=4000, start=date(2024, 1, 1), end=date(2024, 9, 30))


def test_nightly_flow_end_to_end(prefect_harness, dataset, warehouse_url, dvc_env, tmp_path):
    from flows.nightly import nightly

    with start_server(dataset, token="e2e-token") as server:
        dvc_env(DVC_SOURCE_URL=server.url, DVC_SOURCE_TOKEN="e2e-token", DVC_WAREHOUSE_URL=warehouse_url)
        summary = nightly(full_refresh=True, periods=[(P_START, P_END)])

    ents = summary["entities"]
    assert ents["dossiers"]["rows_read"] == dataset.count("dossiers")
    assert ents["payments"]["rows_read"] == dataset.count("payments")
    for e in ents.values():  # rows read = rows loaded + rows quarantined
        assert e["rows_read"] == e["rows_loaded"] + e["rows_quarantined"]
    assert not summary["blocked"] and len(summary["published"]) == 1
    workbook = summary["published"][0]["workbook"]
    assert workbook.endswith(".xlsx") and (tmp_path / "reports").exists()

    exp = expected_figures(dataset)
    engine = connect(warehouse_url)
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT ma_don_vi, received_total, received_online, resolved_total, resolved_late "
                    "FROM mart.rpt_progress WHERE period_start = :a AND period_end = :b"),
            {"a": P_START, "b": P_END},
        ).fetchall()
        got: dict[str, tuple] = {}
        for r in rows:  # a unit that changed level has one row per level: add them up
            prev = got.get(r.ma_don_vi, (0, 0, 0, 0))
            got[r.ma_don_vi] = tuple(a + b for a, b in zip(prev, (r.received_total, r.received_online,
                                                                  r.resolved_total, r.resolved_late), strict=True))
        want = {k: (v["received_total"], v["received_online"], v["resolved_total"], v["resolved_late"])
                for k, v in exp["by_unit"].items() if any(v.values())}
        assert {k: v for k, v in got.items() if any(v)} == want
        assert sum(v["received_total"] for v in exp["by_unit"].values()) > 1000  # the test data is not trivial

        op = c.execute(
            sa.text("SELECT numerator_system, denominator_system, numerator_paid_only, denominator_paid_only "
                    "FROM mart.rpt_service_indicators WHERE period_start = :a AND period_end = :b "
                    "AND ma_don_vi = '*' AND indicator = 'online_payment'"),
            {"a": P_START, "b": P_END},
        ).one()
        assert tuple(int(x) for x in op) == exp["online_payment"]
        assert exp["online_payment"][1] > exp["online_payment"][3]  # some obligations are unpaid
        progress = c.execute(sa.text("SELECT count(*) FROM mart.rpt_progress")).scalar_one()
    engine.dispose()

    # DuckDB: the nightly left the analysts' read-only copy beside the warehouse, with its figures
    if warehouse_url.startswith("duckdb"):
        import duckdb

        from tasks.analyst import default_analyst_path

        copy = default_analyst_path(warehouse_url.removeprefix("duckdb:///"))
        with duckdb.connect(str(copy), read_only=True) as reader:
            assert reader.execute("SELECT count(*) FROM mart.rpt_progress").fetchone()[0] == progress > 0

    # the headline figures, system and paid-only side by side, as a Prefect table artifact
    rows = {r["indicator"]: r for r in latest_table_artifact("dvc-headline")}
    paid, with_obl, paid_done, done = exp["online_payment"]
    online = rows["Tỷ lệ hồ sơ thanh toán trực tuyến"]
    assert online["system"] == pytest.approx(paid / with_obl)
    assert online["paid_only"] == pytest.approx(paid_done / done)


def latest_table_artifact(key: str) -> list[dict]:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC, limit=1)
    assert arts and arts[0].type == "table", arts
    data = arts[0].data
    return json.loads(data) if isinstance(data, str) else data

"""The simulator produces every kind of record the official rules (766 indicators, form 06, work
lists) must handle, in the default dataset `generate(seed=42, n_dossiers=3000)` (dossiers received
2024-01-01 .. 2024-06-30, data cut 2024-07-01 02:00), spread over the half-year.

Every kind is recognised from the API records themselves (and an independent holiday calendar),
not from the generator's internals, so a change that makes a kind disappear fails here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import holidays
import numpy as np
import orjson
import pytest

from simulator.dataset import Dataset, generate
from simulator.export import FLAG_COLUMNS, export_files
from tasks.source_files import parse_file

pytestmark = pytest.mark.timeout(120)

MARRIAGE_FOREIGN = "2.000806.000.00.00.H08"
Rec = dict[str, Any]


def ts(s: str | None) -> datetime | None:
    return datetime.strptime(s, "%Y%m%d%H%M%S") if s else None


_HOL: dict[int, Any] = {}


def is_working_day(d: date) -> bool:
    if d in {date(2024, 5, 4), date(2025, 4, 26)}:
        return True
    if d.year not in _HOL:
        _HOL[d.year] = holidays.country_holidays("VN", years=d.year)
    return d.weekday() < 5 and d not in _HOL[d.year]


_SESSIONS = ((7 * 60, 11 * 60 + 30), (13 * 60 + 30, 17 * 60))


def working_hours(a: datetime, b: datetime) -> float:
    """Working hours between a and b: 07:00-11:30 and 13:30-17:00 on working days."""
    total, day = 0.0, a.date()
    while day <= b.date():
        if is_working_day(day):
            for lo, hi in _SESSIONS:
                s = datetime.combine(day, datetime.min.time()) + timedelta(minutes=lo)
                e = datetime.combine(day, datetime.min.time()) + timedelta(minutes=hi)
                total += max(0.0, (min(e, b) - max(s, a)).total_seconds())
        day += timedelta(days=1)
    return total / 3600


# -- the kinds ------------------------------------------------------------------------------------

def open_supplement(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    r = d["DanhSachHoSoBoSung"]
    return d["TrangThaiHoSo"] == 5 and bool(r) and bool(r[-1]["NgayBoSung"]) and not r[-1]["NgayTiepNhanBoSung"]


def open_supplement_after_due(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return open_supplement(d, procs, now) and bool(d["NgayHenTra"]) \
        and d["NgayHenTra"] < d["DanhSachHoSoBoSung"][-1]["NgayBoSung"]


def supplement_after_due(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    """A round requested after the due date in force when it was requested (any status)."""
    return any(r["NgayHenTraTruoc"] and r["NgayBoSung"] > r["NgayHenTraTruoc"] for r in d["DanhSachHoSoBoSung"])


def supplement_after_final_due(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return bool(d["NgayHenTra"]) and any(r["NgayBoSung"] > d["NgayHenTra"] for r in d["DanhSachHoSoBoSung"])


def two_rounds(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return len(d["DanhSachHoSoBoSung"]) == 2


def answered_round(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return any(r["NgayTiepNhanBoSung"] for r in d["DanhSachHoSoBoSung"])


def undigitised(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return bool(d["TaiLieuNop"]) and all(t["DuocSoHoa"] == 0 for t in d["TaiLieuNop"])


def from_national_store(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return any(t["DuocLayTuKhoDMQG"] == 1 for t in d["TaiLieuNop"])


def zero_price_fees(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    fees = d["DanhSachLePhi"]
    return procs[d["MaTTHC"]]["CoPhiLePhi"] == 1 and bool(fees) and all(f["Gia"] == 0 for f in fees)


def _resolved_paper(d: Rec, procs: dict[str, Rec]) -> bool:
    return procs[d["MaTTHC"]]["KetQuaGiay"] == 1 and d["TrangThaiHoSo"] in (9, 10)


def paper_without_result_list(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return _resolved_paper(d, procs) and d["DanhSachGiayToKetQua"] == []


def paper_with_empty_link(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    res = d["DanhSachGiayToKetQua"]
    return _resolved_paper(d, procs) and bool(res) and not any(r["DuongDanTepTinKetQua"] for r in res)


def uncollected_over_60_days(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return d["TrangThaiHoSo"] == 9 and not d["NgayTra"] \
        and (now.date() - ts(d["NgayKetThucXuLy"]).date()).days > 60


def uncollected_marriage_foreign(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return d["MaTTHC"] == MARRIAGE_FOREIGN and uncollected_over_60_days(d, procs, now)


def late_acceptance(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    if d["KenhThucHien"] != 2 or not d["NgayTiepNhan"]:
        return False
    return working_hours(ts(d["NgayNopHoSo"]), ts(d["NgayTiepNhan"])) > 8


def not_accepted_yet_over_8h(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return d["KenhThucHien"] == 2 and d["TrangThaiHoSo"] == 1 and working_hours(ts(d["NgayNopHoSo"]), now) > 8


def rejected_at_intake(d: Rec, procs: dict[str, Rec], now: datetime) -> bool:
    return d["TrangThaiHoSo"] == 3 and bool(d["NgayTuChoi"])


Kind = Callable[[Rec, dict[str, Rec], datetime], bool]
# kind -> (minimum in the default dataset, minimum number of distinct months it occurs in)
KINDS: dict[str, tuple[Kind, int, int]] = {
    "open_supplement": (open_supplement, 12, 4),
    "open_supplement_after_due": (open_supplement_after_due, 12, 3),
    "supplement_after_due": (supplement_after_due, 12, 4),
    "supplement_after_final_due": (supplement_after_final_due, 12, 3),
    "two_rounds": (two_rounds, 12, 4),
    "answered_round": (answered_round, 12, 4),
    "undigitised": (undigitised, 12, 6),
    "from_national_store": (from_national_store, 12, 6),
    "zero_price_fees": (zero_price_fees, 12, 5),
    "paper_without_result_list": (paper_without_result_list, 12, 5),
    "paper_with_empty_link": (paper_with_empty_link, 12, 6),
    "uncollected_over_60_days": (uncollected_over_60_days, 12, 3),
    "uncollected_marriage_foreign": (uncollected_marriage_foreign, 4, 2),
    "late_acceptance": (late_acceptance, 12, 6),
    "not_accepted_yet_over_8h": (not_accepted_yet_over_8h, 6, 3),
    "rejected_at_intake": (rejected_at_intake, 12, 6),
}


def month(d: Rec) -> str:
    t = d["NgayTiepNhan"] or d["NgayTuChoi"] or d["NgayNopHoSo"]
    return f"{t[:4]}-{t[4:6]}"


def census(ds: Dataset) -> dict[str, Counter[str]]:
    """kind -> Counter of months (of receipt, else rejection, else submission)."""
    procs = {p["MaTTHC"]: p for p in ds.procedures}
    out: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    for d in ds.dossiers:
        for name, (fn, _n, _m) in KINDS.items():
            if fn(d, procs, ds.now):
                out[name][month(d)] += 1
    return out


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return generate(seed=42, n_dossiers=3000)


@pytest.fixture(scope="module")
def counts(ds: Dataset) -> dict[str, Counter[str]]:
    return census(ds)


def test_default_range(ds: Dataset) -> None:
    days = {(d["NgayTiepNhan"] or d["NgayNopHoSo"])[:8] for d in ds.dossiers}
    assert min(days) >= "20240101" and max(days) <= "20240630"
    assert ds.now == datetime(2024, 7, 1, 2, 0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_occurs_across_the_half_year(kind: str, counts: dict[str, Counter[str]]) -> None:
    _fn, at_least, months = KINDS[kind]
    got = counts[kind]
    assert sum(got.values()) >= at_least, (kind, dict(got))
    assert len(got) >= months, (kind, dict(got))


NEEDS_60_DAYS = ("uncollected_over_60_days", "uncollected_marriage_foreign")


def test_kinds_around_the_new_year() -> None:
    """A dataset spanning 2024-12 / 2025-01 has every kind there too (uncollected results over 60
    days need a result 60 days before the cut, so those are checked over the whole range)."""
    ds = generate(seed=42, n_dossiers=3000, start=date(2024, 7, 1), end=date(2025, 1, 31))
    counts = census(ds)
    for kind in KINDS:
        if kind in NEEDS_60_DAYS:
            assert sum(counts[kind].values()) >= 4, (kind, dict(counts[kind]))
        else:
            assert counts[kind]["2024-12"] + counts[kind]["2025-01"] >= 2, (kind, dict(counts[kind]))


def test_foreign_marriage_procedure(ds: Dataset) -> None:
    procs = {p["MaTTHC"]: p for p in ds.procedures}
    p = procs[MARRIAGE_FOREIGN]
    assert p["TenTTHC"] == "Đăng ký kết hôn có yếu tố nước ngoài"
    assert p["CapThucHien"] == [2] and p["CoPhiLePhi"] == 1 and p["KetQuaGiay"] == 1


def test_shares_stay_realistic(ds: Dataset, counts: dict[str, Counter[str]]) -> None:
    """Variety, not a different office: most dossiers on time, most fees priced, most results collected."""
    n = ds.count("dossiers")
    total = {k: sum(v.values()) for k, v in counts.items()}
    assert total["zero_price_fees"] < 0.05 * n
    assert total["uncollected_over_60_days"] < 0.03 * n
    assert total["open_supplement"] < 0.05 * n
    assert total["rejected_at_intake"] < 0.03 * n
    assert total["supplement_after_due"] < 0.02 * n


def test_variety_is_deterministic_and_the_json_path_agrees(ds: Dataset) -> None:
    again = generate(seed=42, n_dossiers=3000)
    assert orjson.dumps(again.records("dossiers")) == orjson.dumps(ds.records("dossiers"))
    procs = {p["MaTTHC"]: p for p in ds.procedures}
    rows = [i for i, d in enumerate(ds.dossiers)
            if any(fn(d, procs, ds.now) for name, (fn, _n, _m) in KINDS.items())]
    idx = np.array(rows, dtype=np.int64)
    assert orjson.loads(again.render_json("dossiers", idx)) == again.render("dossiers", idx, quirks=True)


FLAG_FIELDS = {"DuocThanhToanTrucTuyen", "_CoKetQuaDienTu", "_TaiSuDungDuLieu"}


def test_exports_without_flag_columns(ds: Dataset, tmp_path: Path) -> None:
    assert len(FLAG_COLUMNS) == 3
    paths = {p.name: p for p in export_files(ds, tmp_path, limit=200, seed=3)}
    fields = {name: set(parse_file(p).columns) for name, p in paths.items() if name.startswith("dossiers")}
    flagless = [name for name, f in fields.items() if not f & FLAG_FIELDS]
    assert flagless == ["dossiers_plain.csv"], "the default plain CSV dossier list lacks the flag columns"
    assert all("DuocThanhToanTrucTuyen" not in r for r in parse_file(paths["dossiers_plain.csv"]).records)
    # the other files (the ugly ones are what the file tests compare with the API) keep them
    assert all(FLAG_FIELDS <= f for name, f in fields.items() if name != "dossiers_plain.csv")
    # and the option works on every layout and format
    for p in export_files(ds, tmp_path / "no", entities=("dossiers",), limit=50, flags=False):
        assert not set(parse_file(p).columns) & FLAG_FIELDS, p
    for p in export_files(ds, tmp_path / "yes", entities=("dossiers",), limit=50, flags=True):
        assert FLAG_FIELDS <= set(parse_file(p).columns), p

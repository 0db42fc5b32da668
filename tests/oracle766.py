"""An independent oracle of the official figures: the 766 indicators, form 06, rejected-at-intake
and the two work lists, computed record by record in plain Python from the source system's
records (source contract field names), never through the project's SQL.

It implements the reports specification (reports.md, sections 1, 3, 4) as fixed by
``docs/official-figures.md``:

- the latest version of each dossier (by ``NgayCapNhat``) counts; payments are read as they stand
  at the data cut (``as_of``);
- the unit level is the ``CapDonVi`` of the unit interval valid on the receipt date;
- every indicator is a three-valued hit (``None`` = unknown) over a three-valued membership, with
  SQL's Kleene ``and`` / ``or`` / ``not`` (:func:`and3`, :func:`or3`, :func:`not3`);
- the working-day calendar is built here from the ``holidays`` package's Vietnamese holidays plus
  ``reference/calendar_overrides.csv`` (the warehouse's ``core.calendar`` is not read).

A clerk's file export carries no nested lists: :func:`file_view` turns an API record into what such
a file tells the warehouse (lists unknown, flags from the ``Có``/``Không`` columns or unknown when
those columns are absent).

Entry point: :func:`compute` -> :class:`Figures` (one dict per mart row, keyed as the mart table).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import holidays

PAID, REFUNDED, CANCELLED, EXEMPT = "Đã thanh toán", "Đã hoàn phí", "Hủy thanh toán", "Đối tượng miễn phí"
RESOLVED = (7, 8, 9, 10)

#: (code, 766 code, full score threshold) in the order of the note's tables.
INDICATORS: tuple[tuple[str, str | None, float | None], ...] = (
    ("on_time", "2.1", None),
    ("online_submission", "3.3", 0.50),
    ("online_payment", "3.6", None),
    ("e_result", "4.1", None),
    ("digitised", "4.2", 0.80),
    ("reuse", "4.3", 0.80),
    ("from_national_store", "4.4", None),
    ("online_service_uptake", "3.2", 0.80),
    ("online_payment_uptake", None, None),
)
DOSSIER_INDICATORS = tuple(c for c, _, _ in INDICATORS[:7])
PROCEDURE_INDICATORS = ("online_service_uptake", "online_payment_uptake")
JURISDICTION = "*"

WORK_WINDOWS = ((time(7, 0), time(11, 30)), (time(13, 30), time(17, 0)))


# ----------------------------------------------------------------------------------------------
# three-valued logic (SQL's Kleene logic)
# ----------------------------------------------------------------------------------------------
def and3(*xs: bool | None) -> bool | None:
    if any(x is False for x in xs):
        return False
    if any(x is None for x in xs):
        return None
    return True


def or3(*xs: bool | None) -> bool | None:
    if any(x is True for x in xs):
        return True
    if any(x is None for x in xs):
        return None
    return False


def not3(x: bool | None) -> bool | None:
    return None if x is None else not x


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------
def ts(v: Any) -> datetime | None:
    """'yyyyMMddHHmmss' (or a datetime) -> datetime; '' and None -> None."""
    if v in (None, ""):
        return None
    if isinstance(v, datetime):
        return v
    return datetime.strptime(str(v), "%Y%m%d%H%M%S")


def day_of(v: Any) -> date | None:
    t = ts(v)
    return None if t is None else t.date()


def as_int(v: Any) -> int | None:
    if v in (None, ""):
        return None
    return int(v)


def base_code(ma_tthc: str) -> str:
    """National base code: '1.001653' of '1.001653.000.00.00.H08' or of '1.001653.H08'."""
    parts = ma_tthc.strip().split(".")
    return ".".join(parts[:2])


# ----------------------------------------------------------------------------------------------
# reference files and the calendar
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """The district office's registries the figures read (a missing file: an empty list)."""

    targets: tuple[tuple[str, str, int, float], ...] = ()  # (ma_don_vi, indicator, year, target)
    unit_procedures: frozenset[tuple[str, str]] = frozenset()
    reuse_exclusions: frozenset[str] = frozenset()
    collection_windows: Mapping[str, int] = field(default_factory=dict)  # base code -> days


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
                for row in csv.DictReader(fh) if any((v or "").strip() for v in row.values())]


def read_reference(reference_dir: Path) -> Reference:
    d = Path(reference_dir)
    targets = tuple((r["ma_don_vi"], r["indicator"], int(r["year"]), float(r["target"]))
                    for r in _csv_rows(d / "targets.csv"))
    unit_procs = frozenset((r["ma_don_vi"], r["ma_tthc"]) for r in _csv_rows(d / "unit_procedures.csv"))
    reuse = frozenset(r["ma_tthc"] for r in _csv_rows(d / "reuse_exclusions.csv"))
    windows = {base_code(r["ma_tthc"]): int(float(r["days"])) for r in _csv_rows(d / "collection_windows.csv")}
    return Reference(targets, unit_procs, reuse, windows)


class WorkingDays:
    """Vietnam's public holidays (``holidays``) plus ``calendar_overrides.csv``; weekends off."""

    def __init__(self, reference_dir: Path) -> None:
        self._vn = holidays.country_holidays("VN", years=range(2015, 2031))
        self._overrides: dict[date, bool] = {}
        for r in _csv_rows(Path(reference_dir) / "calendar_overrides.csv"):
            self._overrides[date.fromisoformat(r["day"])] = r["is_working_day"].lower() in ("true", "1")
        self._cache: dict[date, bool] = {}

    def is_working(self, d: date) -> bool:
        w = self._cache.get(d)
        if w is None:
            w = self._overrides[d] if d in self._overrides else (d.weekday() < 5 and d not in self._vn)
            self._cache[d] = w
        return w

    def working_seconds(self, start: datetime, end: datetime) -> int:
        """Seconds of working time (07:00-11:30, 13:30-17:00 on working days) in [start, end]."""
        if end <= start:
            return 0
        total = 0
        d = start.date()
        while d <= end.date():
            if self.is_working(d):
                for a, b in WORK_WINDOWS:
                    lo = max(start, datetime.combine(d, a))
                    hi = min(end, datetime.combine(d, b))
                    if hi > lo:
                        total += int((hi - lo).total_seconds())
            d += timedelta(days=1)
        return total


def hours_2dp(seconds: int) -> Decimal:
    return (Decimal(seconds) / Decimal(3600)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# ----------------------------------------------------------------------------------------------
# records -> dossier facts
# ----------------------------------------------------------------------------------------------
def latest_versions(records: Iterable[Mapping[str, Any]], key: str) -> dict[str, Mapping[str, Any]]:
    """One record per key: the one with the latest NgayCapNhat (the later one in the input on a tie)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in records:
        k = r[key]
        prev = out.get(k)
        if prev is None or (ts(r.get("NgayCapNhat")) or datetime.min) >= (ts(prev.get("NgayCapNhat")) or datetime.min):
            out[k] = r
    return out


def file_view(rec: Mapping[str, Any], *, with_flags: bool = True) -> dict[str, Any]:
    """What a clerk's dossier export ("Sổ theo dõi hồ sơ") tells the warehouse about ``rec``:
    no nested lists (unknown), no MaLinhVuc / LoaiDoiTuong / NgayTuChoi / HinhThuc; the three
    Có/Không columns give has_reuse, has_e_result and DuocThanhToanTrucTuyen (1/0), or nothing
    (unknown) when ``with_flags`` is false."""
    out = {k: v for k, v in rec.items()
           if k not in ("TaiLieuNop", "DanhSachGiayToKetQua", "DanhSachLePhi", "DanhSachHoSoBoSung",
                        "MaLinhVuc", "LoaiDoiTuong", "NgayTuChoi", "HinhThuc", "HoSoCoThanhPhanSoHoa")}
    if with_flags:
        out["_has_reuse"] = any(as_int(t.get("DuocTaiSuDung")) == 1 for t in rec.get("TaiLieuNop") or [])
        out["_has_e_result"] = any(str(g.get("DuongDanTepTinKetQua") or "").strip()
                                   for g in rec.get("DanhSachGiayToKetQua") or [])
        out["DuocThanhToanTrucTuyen"] = 1 if as_int(rec.get("DuocThanhToanTrucTuyen")) in (1, 2) else 0
    else:
        out["_has_reuse"] = out["_has_e_result"] = None
        out["DuocThanhToanTrucTuyen"] = None
    return out


@dataclass
class Units:
    """Unit validity intervals: the level (and name) of a unit on a day."""

    rows: dict[str, list[tuple[date, date, int, str]]]

    @classmethod
    def of(cls, units: Iterable[Mapping[str, Any]]) -> Units:
        rows: dict[str, list[tuple[date, date, int, str]]] = defaultdict(list)
        for u in units:
            since = datetime.strptime(str(u["HieuLucTu"]), "%Y%m%d").date()
            until = datetime.strptime(str(u["HieuLucDen"]), "%Y%m%d").date() if u.get("HieuLucDen") else date.max
            rows[u["MaDonVi"]].append((since, until, int(u["CapDonVi"]), u["TenDonVi"]))
        return cls(dict(rows))

    def at(self, code: str, day: date | None) -> tuple[int, str] | None:
        if day is None:
            return None
        hits = [r for r in self.rows.get(code, []) if r[0] <= day <= r[1]]
        if not hits:
            return None
        best = max(hits, key=lambda r: r[0])
        return best[2], best[3]

    def intervals_in(self, start: date, end: date) -> list[tuple[str, int]]:
        """(unit, level) of every interval valid on some day of [start, end]."""
        return sorted({(code, r[2]) for code, rs in self.rows.items() for r in rs if r[0] <= end and r[1] >= start})


@dataclass
class Dossier:
    """One dossier (latest version) with everything the figures read."""

    rec: Mapping[str, Any]
    key: str
    ma_tthc: str
    ma_don_vi: str
    status: int
    channel: int
    nop: datetime | None
    recv: datetime | None
    due: datetime | None
    end: datetime | None
    tra: datetime | None
    tuchoi: datetime | None
    tttt: int | None
    # procedure attributes (0 when the procedure is not in the catalogue)
    ket_qua_giay: int
    co_phi_le_phi: int
    muc_do_dvc: int
    co_thanh_toan_truc_tuyen: int
    ma_linh_vuc: str | None
    ten_linh_vuc: str | None
    # list-derived flags (None: unknown)
    has_e_result: bool | None
    has_reuse: bool | None
    has_digitised: bool | None
    has_from_national_store: bool | None
    n_le_phi: int | None
    n_le_phi_co_gia: int | None
    rounds: list[tuple[date | None, date | None]] | None  # (NgayBoSung, NgayTiepNhanBoSung) by date
    # payments at the cut
    has_obligation: bool
    fees_settled: bool

    @property
    def is_received(self) -> bool:
        return self.status not in (1, 3) and self.recv is not None

    @property
    def is_resolved(self) -> bool:
        return self.status in RESOLVED

    @property
    def end_day(self) -> date | None:
        """End of processing for form 06 (NgayKetThucXuLy, NgayTra when a resolved dossier lacks it)."""
        if not self.is_resolved:
            return None
        t = self.end or self.tra
        return None if t is None else t.date()

    @property
    def result_issued(self) -> bool:
        return self.status in (9, 10) or self.has_e_result is True


def _flag_any(items: list | None, name: str) -> bool | None:
    if items is None:
        return None
    return any(as_int(t.get(name)) == 1 for t in items)


def make_dossier(rec: Mapping[str, Any], procs: Mapping[str, Mapping[str, Any]],
                 payments: list[Mapping[str, Any]]) -> Dossier:
    p = procs.get(rec["MaTTHC"])
    docs = rec.get("TaiLieuNop") if "TaiLieuNop" in rec else None
    results = rec.get("DanhSachGiayToKetQua") if "DanhSachGiayToKetQua" in rec else None
    fees = rec.get("DanhSachLePhi") if "DanhSachLePhi" in rec else None
    sups = rec.get("DanhSachHoSoBoSung") if "DanhSachHoSoBoSung" in rec else None
    if results is not None:
        has_e = any(str(r.get("DuongDanTepTinKetQua") or "").strip() for r in results)
    else:
        has_e = rec.get("_has_e_result")
    has_reuse = _flag_any(docs, "DuocTaiSuDung") if docs is not None else rec.get("_has_reuse")
    obligations = [x for x in payments
                   if (as_int(x.get("SoTien")) or 0) > 0 and x.get("HinhThucThu") != EXEMPT
                   and x.get("TrangThai") not in (CANCELLED, REFUNDED)]
    return Dossier(
        rec=rec, key=rec["MaHoSo"], ma_tthc=rec["MaTTHC"], ma_don_vi=rec["MaDonVi"],
        status=int(rec["TrangThaiHoSo"]), channel=as_int(rec.get("KenhThucHien")) or 1,
        nop=ts(rec.get("NgayNopHoSo")), recv=ts(rec.get("NgayTiepNhan")), due=ts(rec.get("NgayHenTra")),
        end=ts(rec.get("NgayKetThucXuLy")), tra=ts(rec.get("NgayTra")), tuchoi=ts(rec.get("NgayTuChoi")),
        tttt=as_int(rec.get("DuocThanhToanTrucTuyen")),
        ket_qua_giay=int(p["KetQuaGiay"]) if p else 0,
        co_phi_le_phi=int(p["CoPhiLePhi"]) if p else 0,
        muc_do_dvc=int(p["MucDoDVC"]) if p else 0,
        co_thanh_toan_truc_tuyen=int(p["CoThanhToanTrucTuyen"]) if p else 0,
        ma_linh_vuc=(p["MaLinhVuc"] if p else None) or rec.get("MaLinhVuc"),
        ten_linh_vuc=(p["TenLinhVuc"] if p else None) or rec.get("TenLinhVuc"),
        has_e_result=has_e, has_reuse=has_reuse,
        has_digitised=_flag_any(docs, "DuocSoHoa"),
        has_from_national_store=_flag_any(docs, "DuocLayTuKhoDMQG"),
        n_le_phi=None if fees is None else len(fees),
        n_le_phi_co_gia=None if fees is None else sum(1 for f in fees if (as_int(f.get("Gia")) or 0) > 0),
        rounds=None if sups is None else [(day_of(s.get("NgayBoSung")), day_of(s.get("NgayTiepNhanBoSung")))
                                          for s in sups],
        has_obligation=bool(obligations),
        fees_settled=all(x.get("TrangThai") == PAID for x in obligations),
    )


# ----------------------------------------------------------------------------------------------
# the indicators of one dossier
# ----------------------------------------------------------------------------------------------
def on_time_at_period_end(d: Dossier, pe: date) -> bool | None:
    """2.1 (note section 2): None when the supplement rounds are unknown."""
    if d.rounds is None:
        return None
    if d.is_resolved and d.end is not None and d.end.date() <= pe:
        e = d.end.date()
    else:
        open_rounds = [b for b, r in d.rounds if b is not None and b <= pe and (r is None or r > pe)]
        e = min(open_rounds) if open_rounds else pe
    n_rounds = sum(1 for b, _r in d.rounds if b is not None and b <= e)
    late = n_rounds >= 2 or (d.due is not None and e > d.due.date())
    return not late


def dossier_indicator(code: str, d: Dossier, pe: date) -> tuple[bool | None, bool | None]:
    """(member of the denominator, hit), each three-valued."""
    paper = d.ket_qua_giay == 1
    e_ok = or3(not paper, d.has_e_result)
    if code == "on_time":
        return True, on_time_at_period_end(d, pe)
    if code == "online_submission":
        return True, and3(d.channel == 2, e_ok)
    if code == "online_payment":
        n, n_gia = d.n_le_phi, d.n_le_phi_co_gia
        all_zero = and3(None if n is None else n > 0, None if n_gia is None else n_gia == 0)
        return and3(d.co_phi_le_phi == 1, not3(all_zero)), None if d.tttt is None else d.tttt in (1, 2)
    if code == "e_result":
        return paper, d.has_e_result
    if code == "digitised":
        return True, and3(d.has_digitised, e_ok)
    if code == "reuse":
        return True, d.has_reuse
    if code == "from_national_store":
        return True, d.has_from_national_store
    raise ValueError(code)


# ----------------------------------------------------------------------------------------------
# the figures
# ----------------------------------------------------------------------------------------------
@dataclass
class Figures:
    indicators: dict[tuple[str, int | None, str], dict[str, Any]]  # (ma_don_vi, cap_don_vi, indicator)
    progress: dict[tuple[str, int | None], dict[str, Any]]  # (ma_don_vi, cap_don_vi)
    form06: dict[tuple[int | None, str | None], dict[str, Any]]  # (cap_don_vi, ma_linh_vuc)
    uncollected: dict[str, dict[str, Any]]  # ma_ho_so
    late_acceptance: dict[str, dict[str, Any]]  # ma_ho_so
    population: int = 0


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _offered(proc: Mapping[str, Any], code: str, unit: str, level: int | None, ref: Reference,
             listed_units: set[str]) -> bool:
    if code == "online_service_uptake":
        eligible = int(proc["MucDoDVC"]) in (3, 4)
    else:
        eligible = int(proc["CoPhiLePhi"]) == 1 and int(proc["CoThanhToanTrucTuyen"]) == 1
    if not eligible or level is None or level not in [int(x) for x in proc.get("CapThucHien") or []]:
        return False
    return unit not in listed_units or (unit, proc["MaTTHC"]) in ref.unit_procedures


def compute(
    *, dossiers: Iterable[Mapping[str, Any]], payments: Iterable[Mapping[str, Any]],
    procedures: Iterable[Mapping[str, Any]], units: Iterable[Mapping[str, Any]],
    period: tuple[date, date], as_of: datetime, reference: Reference, calendar: WorkingDays,
) -> Figures:
    ps, pe = period
    procs = {p["MaTTHC"]: p for p in procedures}
    unit_table = Units.of(units)
    pays_by_dossier: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for p in latest_versions(payments, "Ma").values():
        pays_by_dossier[p["MaHoSo"]].append(p)
    all_d = [make_dossier(r, procs, pays_by_dossier.get(k, [])) for k, r in latest_versions(dossiers, "MaHoSo").items()]

    def level_at_receipt(d: Dossier) -> int | None:
        got = unit_table.at(d.ma_don_vi, d.recv.date() if d.recv else None)
        return None if got is None else got[0]

    # --- populations ------------------------------------------------------------------------
    in_p: list[tuple[Dossier, int | None]] = []  # P with the unit level as of receipt
    in_scope: list[tuple[Dossier, int | None, bool]] = []  # received in period or carried over
    for d in all_d:
        if not d.is_received:
            continue
        rd = d.recv.date()
        if rd > pe:
            continue
        lev = level_at_receipt(d)
        if rd >= ps:
            in_p.append((d, lev))
            in_scope.append((d, lev, True))
        else:
            resolved_before = d.is_resolved and (d.end_day is None or d.end_day < ps)
            if not resolved_before:
                in_scope.append((d, lev, False))

    # --- progress and form 06 ---------------------------------------------------------------
    progress_cols = ("received_total", "received_online", "received_direct", "received_postal", "carried_over",
                     "resolved_total", "resolved_before_due", "resolved_on_time", "resolved_late",
                     "in_progress_total", "in_progress_in_time", "in_progress_overdue", "rejected_at_intake")
    form_cols = ("received_total", "received_online", "received_direct_postal", "carried_over", "resolved_total",
                 "resolved_before_due", "resolved_on_time", "resolved_late", "in_progress_total",
                 "in_progress_in_time", "in_progress_overdue")
    progress: dict[tuple[str, int | None], dict[str, Any]] = {}
    form06: dict[tuple[int | None, str | None], dict[str, Any]] = {}
    for d, lev, received_in in in_scope:
        pr = progress.setdefault((d.ma_don_vi, lev), dict.fromkeys(progress_cols, 0))
        fr = form06.setdefault((lev, d.ma_linh_vuc), {**dict.fromkeys(form_cols, 0), "ten_linh_vuc": d.ten_linh_vuc})
        if received_in:
            pr["received_total"] += 1
            pr["received_online"] += d.channel == 2
            pr["received_direct"] += d.channel not in (2, 3)
            pr["received_postal"] += d.channel == 3
            fr["received_online"] += d.channel == 2
            fr["received_direct_postal"] += d.channel != 2
        else:
            pr["carried_over"] += 1
            fr["carried_over"] += 1
        fr["received_total"] += 1
        ed = d.end_day
        if d.is_resolved and ed is not None and ps <= ed <= pe:
            if d.status == 7 or d.due is None or ed == d.due.date():
                t = "resolved_on_time"
            elif ed < d.due.date():
                t = "resolved_before_due"
            else:
                t = "resolved_late"
            for row in (pr, fr):
                row["resolved_total"] += 1
                row[t] += 1
        resolved_by_end = d.is_resolved and (ed is None or ed <= pe)
        if not resolved_by_end:
            overdue = d.status != 5 and d.due is not None and d.due.date() < pe
            for row in (pr, fr):
                row["in_progress_total"] += 1
                row["in_progress_overdue" if overdue else "in_progress_in_time"] += 1
    for d in all_d:
        if d.status != 3:
            continue
        when = d.tuchoi or d.nop
        if when is None or not ps <= when.date() <= pe:
            continue
        at = d.recv or d.nop
        got = unit_table.at(d.ma_don_vi, at.date() if at else None)
        pr = progress.setdefault((d.ma_don_vi, None if got is None else got[0]), dict.fromkeys(progress_cols, 0))
        pr["rejected_at_intake"] += 1
    for pr in progress.values():
        pr["on_time_rate"] = _rate(pr["resolved_before_due"] + pr["resolved_on_time"], pr["resolved_total"])

    # --- the 766 indicators -----------------------------------------------------------------
    unit_rows = sorted({(d.ma_don_vi, lev) for d, lev, _ in in_scope}, key=lambda k: (k[0], k[1] or 0))
    rows_keys: list[tuple[str, int | None]] = [*unit_rows, (JURISDICTION, None)]
    counters = ("numerator_system", "denominator_system", "numerator_paid_only", "denominator_paid_only",
                "excluded_unpaid", "excluded_result_issued", "excluded_in_progress", "excluded_by_list", "unknown")
    acc: dict[tuple[str, int | None, str], dict[str, int]] = {
        (u, lev, c): dict.fromkeys(counters, 0) for u, lev in rows_keys for c, _, _ in INDICATORS
    }

    def exclude(a: dict[str, int], d: Dossier) -> None:
        a["excluded_unpaid"] += 1
        a["excluded_result_issued" if d.result_issued else "excluded_in_progress"] += 1

    for d, lev in in_p:
        for code in DOSSIER_INDICATORS:
            member, hit = dossier_indicator(code, d, pe)
            for key in ((d.ma_don_vi, lev, code), (JURISDICTION, None, code)):
                a = acc[key]
                if member is None or (member and hit is None):
                    a["unknown"] += 1
                    continue
                if not member:
                    continue
                a["denominator_system"] += 1
                a["numerator_system"] += bool(hit)
                if not d.fees_settled:
                    exclude(a, d)
                elif code == "reuse" and d.ma_tthc in reference.reuse_exclusions:
                    a["excluded_by_list"] += 1
                else:
                    a["denominator_paid_only"] += 1
                    a["numerator_paid_only"] += bool(hit)

    listed_units = {u for u, _ in reference.unit_procedures}
    star_intervals = unit_table.intervals_in(ps, pe)
    for code in PROCEDURE_INDICATORS:
        for unit, lev in rows_keys:
            if unit == JURISDICTION:
                offered = {m for m, p in procs.items()
                           if any(_offered(p, code, u, lv, reference, listed_units) for u, lv in star_intervals)}
                pop = in_p
            else:
                offered = {m for m, p in procs.items() if _offered(p, code, unit, lev, reference, listed_units)}
                pop = [(d, lv) for d, lv in in_p if d.ma_don_vi == unit and lv == lev]
            hit_sys: set[str] = set()
            hit_po: set[str] = set()
            a = acc[(unit, lev, code)]
            for d, _lv in pop:
                if d.ma_tthc not in offered:
                    continue
                hit = d.channel == 2 if code == "online_service_uptake" else (
                    None if d.tttt is None else d.tttt in (1, 2))
                if hit is None:
                    a["unknown"] += 1
                if not d.fees_settled:
                    exclude(a, d)
                if hit:
                    hit_sys.add(d.ma_tthc)
                    if d.fees_settled:
                        hit_po.add(d.ma_tthc)
            a["denominator_system"] = a["denominator_paid_only"] = len(offered)
            a["numerator_system"], a["numerator_paid_only"] = len(hit_sys), len(hit_po)

    indicators: dict[tuple[str, int | None, str], dict[str, Any]] = {}
    year = pe.year
    targets = {(u, c): t for u, c, y, t in reference.targets if y == year}
    for (unit, lev, code), a in acc.items():
        code_766, full = next((c7, f) for c, c7, f in INDICATORS if c == code)
        target = targets.get((unit, code), targets.get((JURISDICTION, code)))
        rate_sys = _rate(a["numerator_system"], a["denominator_system"])
        indicators[(unit, lev, code)] = {
            **a,
            "rate_system": rate_sys,
            "rate_paid_only": _rate(a["numerator_paid_only"], a["denominator_paid_only"]),
            "code_766": code_766, "full_score_at": full, "target": target,
            "meets_target": None if target is None or rate_sys is None else rate_sys >= target,
        }

    # --- work lists ---------------------------------------------------------------------------
    uncollected: dict[str, dict[str, Any]] = {}
    for d in all_d:
        if d.status != 9 or d.tra is not None:
            continue
        waiting = None if d.end is None else (as_of.date() - d.end.date()).days
        window = reference.collection_windows.get(base_code(d.ma_tthc))
        uncollected[d.key] = {
            "ma_tthc": d.ma_tthc, "ma_don_vi": d.ma_don_vi, "ngay_ket_thuc_xu_ly": d.end,
            "days_waiting": waiting, "window_days": window,
            "over_window": None if window is None or waiting is None else waiting > window,
            "fees_unpaid": not d.fees_settled, "as_of": as_of,
        }
    late: dict[str, dict[str, Any]] = {}
    for d in all_d:
        if d.channel != 2 or d.nop is None or not ps <= d.nop.date() <= pe:
            continue
        accepted = d.recv or d.tuchoi
        secs = calendar.working_seconds(d.nop, accepted or as_of)
        if secs > 8 * 3600:
            late[d.key] = {"ma_tthc": d.ma_tthc, "ma_don_vi": d.ma_don_vi, "ngay_nop_ho_so": d.nop,
                           "ngay_tiep_nhan": accepted, "working_hours_waited": hours_2dp(secs),
                           "_seconds": secs}
    return Figures(indicators, progress, form06, uncollected, late, population=len(in_p))


def data_cut(dossiers: Iterable[Mapping[str, Any]], payments: Iterable[Mapping[str, Any]]) -> datetime:
    """The default as_of: the latest NgayCapNhat of any dossier or payment."""
    return max(ts(r.get("NgayCapNhat")) or datetime.min for r in [*dossiers, *payments])

"""The data-quality gate: planted bad records land with the right rule and severity, good rows are
untouched, counts reconcile, and GX agrees with the pandas masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.gx import sample_mask, validate_with_gx
from tasks.quality import (
    ENTITIES,
    GX_NATIVE_TYPES,
    CheckContext,
    CheckOutcome,
    check,
    load_suite,
    rule_severity,
)
from tasks.settings import EXPECTATIONS_DIR

NOW = datetime(2024, 7, 1, 12, 0)
PROCEDURES = ["1.001653.000.00.00.H08", "2.002621.H08", "1.000903.000.00.00.H08"]
UNITS = ["000.00.15.H08", "000.01.15.H08", "000.02.15.H08"]
PAY_STATUS = ["Đã thanh toán", "Chờ thanh toán", "Chưa thanh toán", "Đã hoàn phí", "Hủy thanh toán"]


# ---------------------------------------------------------------------------------------------
# Good, core-shaped frames (vectorised so the same builders make 1M rows)
# ---------------------------------------------------------------------------------------------
def _ts(values: Any) -> pd.Series:
    return pd.Series(pd.to_datetime(values)).astype("datetime64[us]")


def good_dossiers(n: int) -> pd.DataFrame:
    """n consistent dossiers, all statuses, received on working days of H1 2024."""
    i = np.arange(n)
    status = (i % 10) + 1
    days = np.busday_offset(np.datetime64("2024-01-02"), i % 120, roll="forward")
    recv = days.astype("datetime64[us]") + np.timedelta64(8, "h") + (i % 60).astype("timedelta64[m]")
    due = np.busday_offset(days, 5).astype("datetime64[us]") + np.timedelta64(17, "h")
    end = np.busday_offset(days, 3).astype("datetime64[us]") + np.timedelta64(10, "h")
    nat = np.datetime64("NaT", "us")
    received = ~np.isin(status, [1, 3])
    resolved = np.isin(status, [7, 8, 9, 10])
    return pd.DataFrame({
        "source": pd.array(["default"] * n, dtype="string"),
        "ma_ho_so": pd.array([f"000.00.15.H08-2401-{k:07d}" for k in i], dtype="string"),
        "ma_tthc": pd.array(np.array(PROCEDURES)[i % 3], dtype="string"),
        "ten_tthc": pd.array(["Thủ tục"] * n, dtype="string"),
        "ma_linh_vuc": pd.array(["LV1"] * n, dtype="string"),
        "ten_linh_vuc": pd.array(["Lĩnh vực"] * n, dtype="string"),
        "ma_don_vi": pd.array(np.array(UNITS)[i % 3], dtype="string"),
        "ten_don_vi": pd.array(["Đơn vị"] * n, dtype="string"),
        "kenh_thuc_hien": pd.array(np.where(i % 7 == 0, None, (i % 3) + 1), dtype="Int16"),
        "loai_doi_tuong": pd.array((i % 4) + 1, dtype="Int16"),
        "applicant_key": pd.array(["ab" * 32] * n, dtype="string"),
        "ngay_nop_ho_so": pd.Series(recv - np.timedelta64(30, "m")).astype("datetime64[us]"),
        "ngay_tiep_nhan": pd.Series(np.where(received, recv, nat)).astype("datetime64[us]"),
        "ngay_hen_tra": pd.Series(np.where(received, due, nat)).astype("datetime64[us]"),
        "ngay_ket_thuc_xu_ly": pd.Series(np.where(resolved, end, nat)).astype("datetime64[us]"),
        "ngay_tra": pd.Series(np.where(status == 10, end + np.timedelta64(1, "D"), nat)).astype("datetime64[us]"),
        "ngay_tu_choi": pd.Series(np.where(status == 3, recv, nat)).astype("datetime64[us]"),
        "trang_thai": pd.array(status, dtype="Int16"),
        "hinh_thuc": pd.array(i % 2, dtype="Int16"),
        "duoc_thanh_toan_truc_tuyen": pd.array(i % 3, dtype="Int16"),
        "co_thanh_phan_so_hoa": pd.array(i % 2, dtype="Int16"),
        "n_tai_lieu": pd.array([3] * n, dtype="Int64"),
        "n_tai_lieu_tai_su_dung": pd.array(i % 4, dtype="Int64"),
        "has_reuse": pd.array((i % 4) > 0, dtype="boolean"),
        "n_ket_qua": pd.array([1] * n, dtype="Int64"),
        "has_e_result": pd.array(i % 2 == 0, dtype="boolean"),
        "n_bo_sung": pd.array([0] * n, dtype="Int64"),
        "tong_le_phi_khai": pd.array([50_000] * n, dtype="Int64"),
        "ma_can_bo_xu_ly": pd.array(["CB01"] * n, dtype="string"),
        "can_bo_xu_ly": pd.array(["Cán bộ"] * n, dtype="string"),
        "ngay_cap_nhat": _ts([NOW.replace(hour=6)] * n),
    })


def good_payments(n: int, dossier_keys: list[str]) -> pd.DataFrame:
    """n consistent payment requests of the given dossiers."""
    i = np.arange(n)
    status = np.array(PAY_STATUS, dtype=object)[i % 5]
    method = np.array(["truc-tuyen", "tien-mat", "chuyen-khoan"], dtype=object)[i % 3]
    method = np.where(status == "Chưa thanh toán", None, method)
    req = np.datetime64("2024-03-01T09:00", "us") + (i % 90).astype("timedelta64[D]")
    nat = np.datetime64("NaT", "us")
    phi = (i % 5) * 10_000
    le_phi = (i % 3) * 5_000
    return pd.DataFrame({
        "source": pd.array(["default"] * n, dtype="string"),
        "ma": pd.array([f"TT-{k:07d}" for k in i], dtype="string"),
        "ma_ho_so": pd.array(np.array(dossier_keys, dtype=object)[i % len(dossier_keys)], dtype="string"),
        "so_tien": pd.array(phi + le_phi, dtype="Int64"),
        "phi": pd.array(phi, dtype="Int64"),
        "le_phi": pd.array(le_phi, dtype="Int64"),
        "trang_thai": pd.array(status, dtype="string"),
        "hinh_thuc_thanh_toan": pd.array(method, dtype="string"),
        "hinh_thuc_thu": pd.array(np.array(["Thu trước", "Thu sau", "Đối tượng miễn phí"], dtype=object)[i % 3],
                                  dtype="string"),
        "kenh_thanh_toan": pd.array(np.where(method == "truc-tuyen", (i % 2) + 1, None), dtype="Int16"),
        "ngay_yeu_cau": pd.Series(req).astype("datetime64[us]"),
        "ngay_thu_phi": pd.Series(np.where(status == "Đã thanh toán", req + np.timedelta64(1, "D"), nat)
                                  ).astype("datetime64[us]"),
        "ngay_hoan_phi": pd.Series(np.where(status == "Đã hoàn phí", req + np.timedelta64(2, "D"), nat)
                                   ).astype("datetime64[us]"),
        "ngay_huy": pd.Series(np.where(status == "Hủy thanh toán", req + np.timedelta64(2, "D"), nat)
                              ).astype("datetime64[us]"),
        "ma_giao_dich": pd.array([f"GD{k}" for k in i], dtype="string"),
        "ngay_cap_nhat": _ts([NOW.replace(hour=6)] * n),
    })


def good_procedures() -> pd.DataFrame:
    """The three procedures of the dossiers, 5 working days each."""
    n = len(PROCEDURES)
    return pd.DataFrame({
        "source": pd.array(["default"] * n, dtype="string"),
        "ma_tthc": pd.array(PROCEDURES, dtype="string"),
        "ten_tthc": pd.array(["Đổi, cấp lại Giấy xác nhận khuyết tật", "Thủ tục B", "Karaoke"], dtype="string"),
        "ma_linh_vuc": pd.array(["LV1"] * n, dtype="string"),
        "ten_linh_vuc": pd.array(["Lĩnh vực"] * n, dtype="string"),
        "cap_thuc_hien": pd.array(["2,3", "3", "2"], dtype="string"),
        "thoi_han_giai_quyet": pd.array([5.0, 5.0, 5.0], dtype="Float64"),
        "don_vi_thoi_han": pd.array(["ngay-lam-viec"] * n, dtype="string"),
        "muc_do_dvc": pd.array([4, 3, 2], dtype="Int16"),
        "co_phi_le_phi": pd.array([1, 0, 1], dtype="Int16"),
        "co_thanh_toan_truc_tuyen": pd.array([1, 0, 1], dtype="Int16"),
        "ket_qua_giay": pd.array([1, 1, 0], dtype="Int16"),
    })


def good_units() -> pd.DataFrame:
    """The dossiers' units, valid since 2020; the first was a district until the 2025 reform."""
    return pd.DataFrame({
        "source": pd.array(["default"] * 4, dtype="string"),
        "ma_don_vi": pd.array([UNITS[0], UNITS[0], UNITS[1], UNITS[2]], dtype="string"),
        "hieu_luc_tu": _ts(["2020-01-01", "2025-07-01", "2020-01-01", "2020-01-01"]),
        "hieu_luc_den": _ts(["2025-06-30", None, None, None]),
        "ten_don_vi": pd.array(["UBND huyện", "UBND xã mới", "UBND xã A", "UBND xã B"], dtype="string"),
        "cap_don_vi": pd.array([2, 3, 3, 3], dtype="Int16"),
        "ma_don_vi_cha": pd.array([None, None, UNITS[0], UNITS[0]], dtype="string"),
        "ma_don_vi_ke_nhiem": pd.array([UNITS[0], None, None, None], dtype="string"),
    })


def calendar() -> pd.DataFrame:
    """Weekdays are working days (enough for the test's dates)."""
    day = pd.date_range("2019-01-01", "2026-12-31", freq="D")
    return pd.DataFrame({"day": day.astype("datetime64[us]"), "is_working_day": day.dayofweek < 5})


def context(**over: Any) -> CheckContext:
    """A context where a good batch passes every rule, batch-level ones included."""
    base: dict[str, Any] = dict(
        known_procedures=good_procedures(), known_units=good_units(), known_dossier_keys=set(),
        calendar=calendar(), recent_volumes=[], last_arrival=datetime(2024, 6, 30, 8, 0), now=NOW,
        freshness_days=3,
    )
    base.update(over)
    return CheckContext(**base)


# ---------------------------------------------------------------------------------------------
# Planted bad records: (entity, description, mutation, expected {(rule, severity)})
# ---------------------------------------------------------------------------------------------
Mutation = Callable[[pd.DataFrame, int], None]


def setv(**values: Any) -> Mutation:
    def apply(frame: pd.DataFrame, i: int) -> None:
        for col, v in values.items():
            frame.loc[i, col] = pd.NA if v is None and not str(frame[col].dtype).startswith("datetime") else (
                pd.NaT if v is None else (pd.Timestamp(v) if str(frame[col].dtype).startswith("datetime") else v))
    return apply


def relative(col: str, base: str, *, business_days: int = 0, days: int = 0, hour: int = 17) -> Mutation:
    """Set ``col`` to ``base``'s date moved by working days (weekdays) or calendar days, at ``hour``."""
    def apply(frame: pd.DataFrame, i: int) -> None:
        day = np.datetime64(frame.loc[i, base].date(), "D")
        moved = np.busday_offset(day, business_days, roll="forward") + np.timedelta64(days, "D")
        frame.loc[i, col] = pd.Timestamp(moved) + pd.Timedelta(hours=hour)
    return apply


def dup_of(j: int) -> Mutation:
    def apply(frame: pd.DataFrame, i: int) -> None:
        frame.loc[i, "ma_ho_so"] = frame.loc[j, "ma_ho_so"]
    return apply


C, W = "critical", "warning"
# Rows of the 60-row dossier frame: status = (i % 10) + 1, procedure = i % 3, unit = i % 3.
DOSSIER_CASES: list[tuple[int, str, Mutation, set[tuple[str, str]]]] = [
    (1, "key missing", setv(ma_ho_so=None), {("dossier_key_present", C)}),
    (3, "status missing", setv(trang_thai=None), {("dossier_status_present", C)}),
    (4, "status outside 1..10", setv(trang_thai=11), {("dossier_status_in_code_list", C)}),
    (5, "channel 4", setv(kenh_thuc_hien=4), {("dossier_channel_in_code_list", C)}),
    (6, "applicant type 5", setv(loai_doi_tuong=5), {("dossier_applicant_type_in_code_list", C)}),
    (7, "paid-online flag 3", setv(duoc_thanh_toan_truc_tuyen=3), {("dossier_paid_online_flag_in_code_list", C)}),
    (8, "watermark missing", setv(ngay_cap_nhat=None), {("dossier_updated_at_present", C)}),
    (13, "processing without receipt date", setv(ngay_tiep_nhan=None),  # status 4
     {("dossier_received_has_receipt_date", C)}),
    (18, "result ready without end date", setv(ngay_ket_thuc_xu_ly=None),  # status 9
     {("dossier_resolved_has_end_date", C)}),
    (19, "handed over without handover date", setv(ngay_tra=None), {("dossier_handed_over_has_handover_date", C)}),
    (21, "due before receipt", setv(ngay_hen_tra="2024-01-01 17:00"),  # status 2, received 2024-01-23
     {("dossier_due_not_before_receipt", C)}),
    (26, "end before receipt", setv(ngay_ket_thuc_xu_ly="2024-01-02 10:00"),  # status 7
     {("dossier_end_not_before_receipt", C)}),
    (29, "handover before end", setv(ngay_tra="2024-01-03"), {("dossier_handover_not_before_end", C)}),
    (31, "receipt in 1900 (mis-parsed)", setv(ngay_tiep_nhan="1900-01-01", ngay_nop_ho_so="1900-01-01"),  # status 2
     {("dossier_receipt_date_plausible", C), ("dossier_unit_valid_at_receipt", W)}),
    (33, "receipt next year", setv(ngay_tiep_nhan="2025-02-03 08:00", ngay_nop_ho_so="2025-02-03 08:00",
                                   ngay_hen_tra="2025-02-10 17:00"),  # status 4
     {("dossier_receipt_date_plausible", C)}),
    (35, "delivery code 7 (warning only)", setv(hinh_thuc=7), {("dossier_delivery_in_code_list", W)}),
    (36, "malformed procedure code", setv(ma_tthc="TTHC-01"),
     {("dossier_procedure_code_format", W), ("dossier_procedure_in_catalogue", W)}),
    (37, "procedure not yet in catalogue", setv(ma_tthc="1.999999.000.00.00.H08"),
     {("dossier_procedure_in_catalogue", W)}),
    (38, "unit not yet in catalogue", setv(ma_don_vi="000.99.15.H08"), {("dossier_unit_in_catalogue", W)}),
    (40, "unit not valid at receipt", setv(ma_don_vi=UNITS[0], ngay_nop_ho_so="2019-06-03 08:00",
                                           ngay_tiep_nhan="2019-06-03 08:30", ngay_hen_tra="2019-06-10 17:00",
                                           ngay_ket_thuc_xu_ly=None),  # status 1 -> made 2
     {("dossier_unit_valid_at_receipt", W)}),
    (41, "due date 3 working days late", relative("ngay_hen_tra", "ngay_tiep_nhan", business_days=8),
     {("dossier_due_date_matches_processing_time", W)}),
    (42, "rejected without rejection date", setv(ngay_tu_choi=None), {("dossier_rejected_has_rejection_date", W)}),
    (44, "processing with an end date", relative("ngay_ket_thuc_xu_ly", "ngay_tiep_nhan", business_days=2),  # status 5
     {("dossier_open_has_no_end_date", W)}),
    (45, "more reused than submitted documents", setv(n_tai_lieu_tai_su_dung=9),
     {("dossier_reused_documents_within_total", W)}),
    (46, "receipt before submission", relative("ngay_nop_ho_so", "ngay_tiep_nhan", days=2, hour=8),
     {("dossier_receipt_not_before_submission", W)}),
    (51, "received without due date", setv(ngay_hen_tra=None), {("dossier_received_has_due_date", W)}),
    (53, "two critical faults on one row", setv(kenh_thuc_hien=9, loai_doi_tuong=0),  # status 4
     {("dossier_channel_in_code_list", C), ("dossier_applicant_type_in_code_list", C)}),
]


def planted_dossiers() -> tuple[pd.DataFrame, dict[str, set[tuple[str, str]]]]:
    """60 good dossiers with the cases planted; expected issues by record key."""
    frame = good_dossiers(60)
    expected: dict[str, set[tuple[str, str]]] = {}
    for i, _, mutate, rules in DOSSIER_CASES:
        if i == 40:
            frame.loc[i, "trang_thai"] = 2
        mutate(frame, i)
        key = frame.loc[i, "ma_ho_so"]
        expected[f"#{i}" if pd.isna(key) else key] = rules
    # Duplicated key (rows 55 and 56), a supplement-delayed due date that must NOT warn (row 57).
    dup_of(55)(frame, 56)
    expected["#55"] = expected["#56"] = {("dossier_key_unique", C)}
    relative("ngay_hen_tra", "ngay_tiep_nhan", business_days=15)(frame, 57)
    frame.loc[57, "n_bo_sung"] = 1
    return frame, expected


PAYMENT_CASES: list[tuple[int, str, Mutation, set[tuple[str, str]]]] = [
    (1, "key missing", lambda f, i: f.__setitem__("ma", f["ma"].mask(f.index == i)), {("payment_key_present", C)}),
    (2, "dossier key missing", setv(ma_ho_so=None),
     {("payment_dossier_key_present", C)}),
    (3, "amount != fee + charge", setv(so_tien=99_999), {("payment_amount_equals_fee_plus_charge", C)}),
    (4, "negative fee", setv(phi=-10_000, so_tien=-10_000 + 5_000),
     {("payment_fee_non_negative", C), ("payment_amount_non_negative", C)}),
    (6, "status label unknown", setv(trang_thai="Paid"), {("payment_status_in_code_list", C)}),
    (7, "payment method 'cash'", setv(hinh_thuc_thanh_toan="cash"), {("payment_method_in_code_list", C)}),
    (8, "collection label unknown", setv(hinh_thuc_thu="Thu giữa"), {("payment_collection_in_code_list", C)}),
    (9, "payment channel 3", setv(kenh_thanh_toan=3), {("payment_channel_in_code_list", C)}),
    (10, "exempt zero-amount request paid without method (fine)",
     setv(phi=0, le_phi=0, so_tien=0, hinh_thuc_thanh_toan=None, kenh_thanh_toan=None), set()),
    (11, "amount missing", setv(so_tien=None), {("payment_amount_present", C)}),
    (12, "status missing", setv(trang_thai=None), {("payment_status_present", C)}),
    (15, "paid without payment date", setv(ngay_thu_phi=None), {("payment_paid_has_payment_date", W)}),
    (16, "paid online without channel", setv(kenh_thanh_toan=None, hinh_thuc_thanh_toan="truc-tuyen"),
     {("payment_online_has_channel", W)}),
    (18, "refunded without refund date", setv(ngay_hoan_phi=None), {("payment_refunded_has_refund_date", W)}),
    (19, "cancelled without cancel date", setv(ngay_huy=None), {("payment_cancelled_has_cancel_date", W)}),
    (20, "paid before requested", setv(ngay_thu_phi="2024-01-01 10:00"), {("payment_paid_not_before_request", W)}),
    (21, "dossier not arrived yet", setv(ma_ho_so="000.00.15.H08-2401-9999999"),
     {("payment_dossier_in_warehouse", W)}),
    (25, "paid without method", setv(hinh_thuc_thanh_toan=None, kenh_thanh_toan=None),
     {("payment_paid_has_method", W)}),
]

PROCEDURE_CASES: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("bad key format", {"ma_tthc": "1.0016.H08"}, {("procedure_code_format", C)}),
    ("service level 5", {"muc_do_dvc": 5}, {("procedure_service_level_in_code_list", C)}),
    ("time unit 'tuan'", {"don_vi_thoi_han": "tuan"}, {("procedure_time_unit_in_code_list", C)}),
    ("negative processing time", {"thoi_han_giai_quyet": -1.0}, {("procedure_processing_time_non_negative", C)}),
    ("paper-result flag 2", {"ket_qua_giay": 2}, {("procedure_paper_result_flag_in_code_list", C)}),
    ("levels '2;3'", {"cap_thuc_hien": "2;3"}, {("procedure_levels_format", W)}),
]

UNIT_CASES: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("level 4", {"cap_don_vi": 4}, {("unit_level_in_code_list", C)}),
    ("interval ends before it starts", {"hieu_luc_den": pd.Timestamp("2019-01-01")},
     {("unit_validity_interval_ordered", C)}),
    ("parent unknown", {"ma_don_vi_cha": "000.77.15.H08"}, {("unit_parent_in_catalogue", W)}),
    ("no name", {"ten_don_vi": pd.NA}, {("unit_name_present", W)}),
]


def _issues_by_key(outcome: CheckOutcome) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for rec in outcome.issues.itertuples(index=False):
        out.setdefault(rec.record_key, set()).add((rec.rule, rec.severity))
    return out


def _assert_reconciles(frame: pd.DataFrame, outcome: CheckOutcome) -> None:
    loaded = outcome.loadable(frame)
    assert len(frame) == len(loaded) + len(outcome.critical_keys)
    assert outcome.quarantined_count == len(outcome.critical_keys)
    crit = set(outcome.issues.loc[outcome.issues["severity"] == "critical", "record_key"])
    assert crit == outcome.critical_keys


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_suites_are_valid_gx_format_with_stable_rule_names() -> None:
    names: set[str] = set()
    for entity in ENTITIES:
        doc = json.loads((EXPECTATIONS_DIR / f"{entity}.json").read_text(encoding="utf-8"))
        assert doc["name"] == entity
        suite = load_suite(entity)
        for r in suite.rules:
            assert r.type.startswith(("expect_", "dvc_expect_")) or r.type == "dvc_parse"
            assert r.severity in ("critical", "warning") and r.description
            assert r.rule not in names, f"rule name {r.rule} reused"
            names.add(r.rule)
    assert len(names) >= 60


@pytest.mark.parametrize("entity", ENTITIES)
def test_good_batches_pass_every_rule(entity: str) -> None:
    dossiers = good_dossiers(60)
    frames = {"dossiers": dossiers, "payments": good_payments(40, list(dossiers["ma_ho_so"])),
              "procedures": good_procedures(), "units": good_units()}
    ctx = context(known_dossier_keys=set(dossiers["ma_ho_so"]), recent_volumes=[60] * 6)
    out = check(entity, frames[entity], ctx)
    assert out.issues.empty, out.issues.to_string()
    assert all(r.success for r in out.results), [r for r in out.results if not r.success]
    assert out.critical_keys == set() and out.quarantined_count == 0
    assert {r.rule for r in out.results} == {r.rule for r in load_suite(entity).rules if r.type != "dvc_parse"}


def test_planted_dossiers_land_with_rule_and_severity() -> None:
    frame, expected = planted_dossiers()
    out = check("dossiers", frame, context())
    got = _issues_by_key(out)
    for key, rules in expected.items():
        assert got.get(key) == rules, (key, got.get(key), rules)
    assert set(got) == set(expected), "a good row got an issue"
    _assert_reconciles(frame, out)
    crit_expected = {k for k, rules in expected.items() if any(s == C for _, s in rules)}
    assert out.critical_keys == crit_expected
    # Untouched good rows are exactly the loaded rows minus the warned ones.
    loaded = out.loadable(frame)
    assert len(loaded) == 60 - len(crit_expected)
    assert out.warning_count == sum(sum(1 for _, s in rules if s == W) for k, rules in expected.items()
                                    if k not in crit_expected)
    # Issue details say what is wrong, in words.
    detail = out.issues.set_index(["record_key", "rule"])["detail"]
    assert "trang_thai = 11 not in" in detail[(frame.loc[4, "ma_ho_so"], "dossier_status_in_code_list")]
    assert "occurs 2 times" in detail[("#55", "dossier_key_unique")]
    assert "working days" in detail[(frame.loc[41, "ma_ho_so"], "dossier_due_date_matches_processing_time")]


def test_planted_payments_land_with_rule_and_severity() -> None:
    dossiers = good_dossiers(30)
    frame = good_payments(30, list(dossiers["ma_ho_so"]))
    expected: dict[str, set[tuple[str, str]]] = {}
    for i, _, mutate, rules in PAYMENT_CASES:
        mutate(frame, i)
        key = frame.loc[i, "ma"]
        expected[f"#{i}" if pd.isna(key) else key] = rules
    ctx = context(known_dossier_keys=set())
    check("dossiers", dossiers, ctx)  # the run's own dossiers become known
    out = check("payments", frame, ctx)
    got = _issues_by_key(out)
    for key, rules in expected.items():
        assert got.get(key, set()) == rules, (key, got.get(key), rules)
    assert set(got) == {k for k, rules in expected.items() if rules}
    _assert_reconciles(frame, out)


@pytest.mark.parametrize(("entity", "cases"), [("procedures", PROCEDURE_CASES), ("units", UNIT_CASES)])
def test_planted_catalogue_rows(entity: str, cases: list[tuple[str, dict[str, Any], set]]) -> None:
    base = good_procedures() if entity == "procedures" else good_units()
    for _, values, rules in cases:
        frame = base.copy()
        i = len(frame) - 1
        for col, v in values.items():
            frame.loc[i, col] = v
        out = check(entity, frame, context())
        key = out.row_keys.iloc[i]
        assert _issues_by_key(out) == {key: rules}, (values, out.issues.to_string())
        _assert_reconciles(frame, out)


def test_unit_keys_duplicates_missing_and_overlaps() -> None:
    frame = pd.concat([good_units(), good_units().iloc[[2]]], ignore_index=True)  # row 4 repeats row 2's key
    frame.loc[3, "hieu_luc_tu"] = pd.NaT  # row 3: key part missing
    extra = good_units().iloc[[0]].copy()
    extra["hieu_luc_tu"] = pd.Timestamp("2024-01-01")  # overlaps 2020..2025-06-30 of the same unit
    frame = pd.concat([frame, extra], ignore_index=True)
    out = check("units", frame, context())
    got = _issues_by_key(out)
    assert got["#3"] == {("unit_valid_from_present", C)}
    assert got["#2"] == {("unit_key_unique", C)}
    assert got["#4"] == {("unit_key_unique", C), ("unit_intervals_do_not_overlap", W)}
    assert got[f"{UNITS[0]}|2024-01-01"] == {("unit_intervals_do_not_overlap", W)}
    assert out.critical_keys == {"#2", "#3", "#4"}
    _assert_reconciles(frame, out)


def test_batch_level_volume_and_freshness() -> None:
    frame = good_dossiers(10)
    results = {r.rule: r for r in check("dossiers", frame, context(recent_volumes=[100] * 5)).results}
    assert not results["dossier_batch_volume_within_recent_range"].success  # 10% of the median
    assert results["dossier_batch_volume_within_recent_range"].severity == W
    assert results["dossier_freshness"].success
    # Too little history: skipped, not failed.
    results = {r.rule: r for r in check("dossiers", frame, context(recent_volumes=[100] * 4)).results}
    assert results["dossier_batch_volume_within_recent_range"].success
    assert "skipped" in results["dossier_batch_volume_within_recent_range"].detail
    # Nothing new for 5 days (empty batch, last arrival 2024-06-26): stale.
    results = {r.rule: r for r in check("dossiers", frame.iloc[:0], context(
        last_arrival=datetime(2024, 6, 26), recent_volumes=[100] * 6)).results}
    assert not results["dossier_freshness"].success
    assert not results["dossier_batch_volume_within_recent_range"].success
    out = check("dossiers", frame.iloc[:0], context())
    assert out.rows == 0 and out.issues.empty


def test_missing_references_skip_instead_of_failing() -> None:
    frame = good_dossiers(20)
    out = check("dossiers", frame, CheckContext(now=NOW, last_arrival=NOW))
    res = {r.rule: r for r in out.results}
    for rule in ("dossier_procedure_in_catalogue", "dossier_unit_in_catalogue", "dossier_unit_valid_at_receipt",
                 "dossier_due_date_matches_processing_time"):
        assert res[rule].success and "skipped" in res[rule].detail
    assert out.issues.empty


def test_missing_column_fails_loudly() -> None:
    with pytest.raises(ValueError, match="trang_thai"):
        check("dossiers", good_dossiers(5).drop(columns=["trang_thai"]), context())


# ---------------------------------------------------------------------------------------------
# GX agrees with the masks (GX imported once for this module)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gx_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gx-docs")


def test_gx_unexpected_counts_equal_mask_counts(gx_docs: Path) -> None:
    dossiers, _ = planted_dossiers()
    payments = good_payments(30, list(dossiers["ma_ho_so"].dropna()))
    for i, _, mutate, _ in PAYMENT_CASES:
        mutate(payments, i)
    units = pd.concat([good_units(), good_units().iloc[[2]]], ignore_index=True)
    units.loc[0, "cap_don_vi"] = 7
    units.loc[1, "hieu_luc_den"] = pd.Timestamp("2019-01-01")
    procedures = good_procedures()
    procedures.loc[0, "ma_tthc"] = "bad"
    procedures.loc[1, "muc_do_dvc"] = 9
    frames = {"dossiers": dossiers, "payments": payments, "procedures": procedures, "units": units}
    for entity, frame in frames.items():
        out = check(entity, frame, context())
        ours = {r.rule: r.unexpected_count for r in out.results}
        rec = validate_with_gx(entity, frame, "run-1", gx_docs)
        native = {r.rule for r in load_suite(entity).rules if r.type in GX_NATIVE_TYPES}
        assert set(rec.unexpected_counts) == native
        for rule in native:
            assert rec.unexpected_counts[rule] == ours[rule], (entity, rule, rec.unexpected_counts[rule], ours[rule])
        assert sum(rec.unexpected_counts.values()) > 0 and not rec.success
        assert not rec.sampled and rec.rows_validated == len(frame)
    index = gx_docs / "run-1" / "index.html"
    assert index.exists() and rec.docs_index == str(index)
    html = index.read_text(encoding="utf-8")
    for entity in ENTITIES:
        assert entity in html
    # Nothing written outside the docs folder.
    assert not (Path.cwd() / "gx").exists() and not (Path.cwd() / "great_expectations").exists()


def test_gx_validates_every_chunk_up_to_the_budget_and_a_stable_sample_beyond(gx_docs: Path) -> None:
    """Three chunks of 40 dossiers, a budget of 50 rows: GX validates chunk 1 and 10 rows of chunk 2
    in full, then exactly the rows whose key hash falls in the sample, and counts the failures
    planted in the rows it saw, and only those."""
    frame = good_dossiers(120)
    frame.insert(0, "record_key", frame["ma_ho_so"])  # as the normaliser's core frame carries it
    planted = [5, 45, 60, 61, 62, 63, 100, 119]  # 2 within the budget, 6 beyond
    frame.loc[planted, "trang_thai"] = 11
    seen = np.arange(120) < 50
    seen[50:] = sample_mask(frame["record_key"].iloc[50:], 0.3)
    assert 50 < seen.sum() < 120 and not seen[planted].all()  # the sample is not everything
    rec = validate_with_gx("dossiers", frame, "run-2", gx_docs, row_budget=50, sample_fraction=0.3, chunk_rows=40)
    cov = rec.coverage
    assert (cov["rows_checked"], cov["rows_in_full"], cov["rows_beyond_budget"]) == (120, 50, 70)
    assert rec.rows_validated == int(seen.sum()) == 50 + cov["rows_sampled"] and rec.sampled
    assert (cov["chunks"], cov["chunks_validated"], cov["chunks_failed"]) == (3, 3, 0)
    assert rec.unexpected_counts["dossier_status_in_code_list"] == int(seen[planted].sum())
    assert rec.element_counts["dossier_key_present"] == rec.rows_validated
    assert f"GX validated {rec.rows_validated} of 120 rows (3 of 3 chunks)" in cov["text"]
    page = next((gx_docs / "run-2" / "validations").rglob("*.html")).read_text(encoding="utf-8")
    assert "what GX saw" in page and "rows_beyond_budget" in page
    # no budget (the default): every row of every chunk
    rec = validate_with_gx("dossiers", frame, "run-3", gx_docs, chunk_rows=60)
    assert rec.rows_validated == 120 and not rec.sampled and rec.coverage["chunks_validated"] == 2
    assert rec.unexpected_counts["dossier_status_in_code_list"] == len(planted)


def test_gx_batches_consecutive_chunks_but_never_two_versions_of_a_record(gx_docs: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """GX validates consecutive chunks together (its cost is mostly per validation), up to
    BATCH_ROWS rows; a chunk that repeats a record of the batch (a dossier updated while the run
    read it) starts a new batch, so GX's uniqueness rules count what the checks count per chunk."""
    import tasks.gx as gx

    frame = good_dossiers(100)
    frame.insert(0, "record_key", frame["ma_ho_so"])
    monkeypatch.setattr(gx, "BATCH_ROWS", 50)
    tally = gx.GxTally("dossiers", "run-4", gx_docs)
    sizes = [[len(b) for b in tally.select(frame.iloc[i:i + 20])] for i in range(0, 100, 20)]
    assert sizes == [[], [], [60], [], []] and [len(b) for b in tally.flush()] == [40]
    assert tally.flush() == [] and tally.coverage.chunks == 5
    monkeypatch.setattr(gx, "BATCH_ROWS", 50_000)
    again = pd.concat([frame.iloc[:40], frame.iloc[[10]], frame.iloc[40:79]], ignore_index=True)  # #10 read twice
    assert [len(b) for b in tally.select(again.iloc[:40])] == []
    assert [len(b) for b in tally.select(again.iloc[40:])] == [40] and [len(b) for b in tally.flush()] == [40]
    rec = validate_with_gx("dossiers", again, "run-4", gx_docs, chunk_rows=40)
    assert rec.unexpected_counts["dossier_key_unique"] == 0 and rec.rows_validated == 80
    assert (rec.coverage["chunks"], rec.coverage["chunks_validated"]) == (2, 2)
    one_batch = validate_with_gx("dossiers", again, "run-5", gx_docs)  # one chunk: the masks flag both rows
    assert one_batch.unexpected_counts["dossier_key_unique"] == 2 == sum(
        r.unexpected_count for r in check("dossiers", again.drop(columns="record_key"), context()).results
        if r.rule == "dossier_key_unique")


def test_sample_mask_is_deterministic_and_per_key() -> None:
    keys = pd.Series([f"000.00.15.H08-2401-{k:07d}" for k in range(20_000)], dtype="string")
    mask = sample_mask(keys, 0.1)
    assert 0.09 < mask.mean() < 0.11
    assert (sample_mask(keys.iloc[5_000:], 0.1) == mask[5_000:]).all()  # a key's fate ignores the others
    assert (sample_mask(keys.astype(object), 0.1) == mask).all()
    assert sample_mask(keys, 1.0).all() and (sample_mask(keys, 0.05) <= sample_mask(keys, 0.1)).all()


def _suites_with(tmp_path: Path, entity: str, *extra: dict[str, Any]) -> Path:
    """The shipped suites in ``tmp_path``, ``entity``'s with its ``dvc_parse`` rules replaced by ``extra``."""
    for e in ENTITIES:
        doc = json.loads((EXPECTATIONS_DIR / f"{e}.json").read_text(encoding="utf-8"))
        if e == entity:
            doc["expectations"] = [x for x in doc["expectations"] if x["type"] != "dvc_parse"] + list(extra)
        (tmp_path / f"{e}.json").write_text(json.dumps(doc), encoding="utf-8")
    return tmp_path


def test_dvc_parse_rules_are_declared_in_the_suite_and_left_to_the_normaliser(tmp_path: Path) -> None:
    """A ``dvc_parse`` rule declares the normaliser's own rules (``parse_<column>`` per column) with
    their severity: ``check`` and GX skip it (it reads records, not frame columns), and the
    severity of ``parse_<column>`` is the suite's."""
    parse = {"type": "dvc_parse",
             "kwargs": {"check": "typed", "columns": ["ngay_tiep_nhan", "not_a_frame_column"],
                        "issue_rule": "parse_{column}"},
             "meta": {"rule": "dossier_dates_typed", "severity": "warning", "description": "dates parse"}}
    nested = {"type": "dvc_parse", "kwargs": {"check": "nested_lists", "issue_rule": "parse_nested_lists"},
              "meta": {"rule": "dossier_lists_well_formed", "severity": "critical", "description": "lists parse"}}
    folder = _suites_with(tmp_path, "dossiers", parse, nested)
    suite = load_suite("dossiers", folder)
    assert suite.rule("parse_ngay_tiep_nhan").rule == "dossier_dates_typed"
    assert suite.rule("dossier_dates_typed").is_parse and suite.rule("parse_ngay_tra") is None
    assert not {"dossier_dates_typed", "dossier_lists_well_formed"} & {r.rule for r in suite.gx_native}
    assert "not_a_frame_column" not in suite.columns()
    frame, _ = planted_dossiers()
    out = check("dossiers", frame, context(), expectations_dir=folder)
    assert not {r.rule for r in out.results} & {"dossier_dates_typed", "dossier_lists_well_formed"}
    assert len(out.results) == len(suite.checked) == len(suite.rules) - 2
    assert rule_severity("dossiers", "parse_ngay_tiep_nhan", expectations_dir=folder) == "warning"
    assert rule_severity("dossiers", "parse_nested_lists", "warning", expectations_dir=folder) == "critical"
    assert rule_severity("dossiers", "parse_nowhere", "critical", expectations_dir=folder) == "critical"
    assert rule_severity("dossiers", "dossier_procedure_present") == "warning"
    # the shipped suites declare every rule the normaliser reports under
    for e in ENTITIES:
        shipped = load_suite(e)
        for r in shipped.rules:
            assert not r.is_parse or all(shipped.rule(name) is r for name in r.issue_rules), (e, r.rule)
    bad = {"type": "dvc_parse_typo", "kwargs": {}, "meta": {"rule": "parse_x", "severity": "critical"}}
    (tmp_path / "typo").mkdir()
    with pytest.raises(ValueError, match="unsupported type dvc_parse_typo"):
        load_suite("dossiers", _suites_with(tmp_path / "typo", "dossiers", bad))


# ---------------------------------------------------------------------------------------------
# Scale (speed itself is measured in bench/, never asserted in unit tests)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_check_one_million_dossiers() -> None:
    frame = good_dossiers(1_000_000)
    frame.loc[[11, 500_001], "trang_thai"] = 11  # status 2 rows
    frame.loc[999_999, "ma_tthc"] = "bad"  # format + catalogue warnings
    ctx = context(recent_volumes=[900_000] * 6)
    out = check("dossiers", frame, ctx)
    assert out.quarantined_count == 2 and len(out.issues) == 4


@pytest.mark.parametrize("values", [
    {"K1", "K3"}, set(), {"K1", 1}, ["K2", ""], {"absent"}, ("K1",), frozenset({"", "K4"}),
])
@pytest.mark.parametrize("dtype", ["string", object])
def test_reference_membership_matches_pandas_isin(values: Any, dtype: Any) -> None:
    """The gate's membership test (a single Arrow ``is_in`` for Arrow strings against strings) gives
    pandas' ``isin`` row for row: nulls, empty strings, non-string values, empty sets."""
    from tasks.quality_rules import _isin

    s = pd.Series(["K1", None, "K2", "", "K3", "K4", None] * 3, dtype=dtype)
    got = _isin(s, values)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, s.isin(values).to_numpy(dtype=bool))

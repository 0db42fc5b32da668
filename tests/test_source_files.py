"""tasks.source_files against a corpus of ugly clerk exports (tests/fixtures/files/).

The corpus is built by tests/fixtures/make_files.py and checked in; the expected parse of each
file is written out here by hand, row by row.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.source_files import (
    FileFormatError,
    ParsedFile,
    content_hash,
    normalize_label,
    parse_file,
)

FILES = Path(__file__).parent / "fixtures" / "files"


def parse(name: str) -> ParsedFile:
    return parse_file(FILES / name)


# --- the corpus: expected rows ----------------------------------------------------------------


def test_titles_sections_total_one_row_header() -> None:
    p = parse("01_dossiers_titles_sections.xlsx")
    assert (p.entity, p.sheet, p.header_row, p.header_rows) == ("dossiers", "Sổ theo dõi", 5, 1)
    assert p.skipped == {"section": 2, "total": 1} and p.rows_skipped == 3
    assert p.unknown_columns == [] and p.warnings == []
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240115-00012", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "TenLinhVuc": "Hộ tịch", "MaDonVi": "000.00.15.H08",
            "TenDonVi": "UBND huyện Tuy Phước", "KenhThucHien": 2, "ChuHoSo": "Nguyễn Văn An",
            "SoGiayToChuHoSo": "079123456789", "SoDienThoai": "0912345678", "NgayNopHoSo": "20240115080500",
            "NgayTiepNhan": "20240115083000", "NgayHenTra": "20240118000000", "NgayKetThucXuLy": "20240117164510",
            "NgayTra": "20240118090000", "TrangThaiHoSo": 10, "CanBoXuLy": "Trần Thị Bình", "MaCanBoXuLy": "CB001",
            "DuocThanhToanTrucTuyen": 1, "_CoKetQuaDienTu": 1, "_TaiSuDungDuLieu": 0,
            "NgayCapNhat": "20240118090005", "_row_number": 7,
        },
        {
            "MaHoSo": "000.00.15.H08-240116-00013", "MaTTHC": "2.002621.H08", "TenTTHC": "Chứng thực bản sao",
            "TenLinhVuc": "Chứng thực", "MaDonVi": "000.00.15.H08", "TenDonVi": "UBND huyện Tuy Phước",
            "KenhThucHien": 1, "ChuHoSo": "Lê Văn Cường", "SoGiayToChuHoSo": "012345678",
            "SoDienThoai": "0987654321", "NgayNopHoSo": "20240116000000", "NgayTiepNhan": "20240116074500",
            "NgayHenTra": "20240119170000", "NgayKetThucXuLy": None, "NgayTra": None, "TrangThaiHoSo": 4,
            "CanBoXuLy": "Trần Thị Bình", "MaCanBoXuLy": "CB001", "DuocThanhToanTrucTuyen": 0,
            "_CoKetQuaDienTu": None, "_TaiSuDungDuLieu": None, "NgayCapNhat": "20240116074500", "_row_number": 8,
        },
        {
            "MaHoSo": "000.31.15.H08-240120-00001", "MaTTHC": "1.004227.000.00.00.H08",
            "TenTTHC": "Đăng ký kết hôn", "TenLinhVuc": "Hộ tịch", "MaDonVi": "000.31.15.H08",
            "TenDonVi": "UBND xã Phước Lộc", "KenhThucHien": 3, "ChuHoSo": "Phạm Thị Dung",
            "SoGiayToChuHoSo": None, "SoDienThoai": None, "NgayNopHoSo": "20240120100000",
            "NgayTiepNhan": "20240122080000", "NgayHenTra": "20240125000000", "NgayKetThucXuLy": None,
            "NgayTra": None, "TrangThaiHoSo": 5, "CanBoXuLy": "Võ Văn Em", "MaCanBoXuLy": "CB031",
            "DuocThanhToanTrucTuyen": 0, "_CoKetQuaDienTu": 0, "_TaiSuDungDuLieu": 1,
            "NgayCapNhat": "20240123141000", "_row_number": 10,
        },
    ]


def test_two_row_header_with_merged_groups_and_excel_dates() -> None:
    p = parse("02_dossiers_two_row_header.xlsx")
    assert (p.entity, p.sheet, p.header_row, p.header_rows) == ("dossiers", "HoSo", 4, 2)
    assert p.columns["NgayTiepNhan"] == "Ngày tiếp nhận"  # group "Ngày" + sub-label "tiếp nhận"
    assert p.columns["NgayKetThucXuLy"] == "Ngày có kết quả"
    assert p.unknown_columns == ["Ghi chú"]
    assert p.warnings == ["unknown columns ignored: 'Ghi chú'"]
    assert p.skipped == {"blank": 1}  # the blank row inside; formatted empty rows under the table are not rows
    assert p.records == [
        {
            "MaHoSo": "000.31.15.H08-240201-00004", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "NgayNopHoSo": "20240201091500", "NgayTiepNhan": "20240201092000",
            "NgayHenTra": "20240202000000", "NgayKetThucXuLy": "20240201150030", "NgayTra": "20240202080000",
            "TrangThaiHoSo": 10, "KenhThucHien": 1, "_CoKetQuaDienTu": 1, "_TaiSuDungDuLieu": 1, "_row_number": 6,
        },
        {
            "MaHoSo": "000.31.15.H08-240205-00007", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "NgayNopHoSo": "20240205140000", "NgayTiepNhan": "20240205140000",
            "NgayHenTra": "20240206140000", "NgayKetThucXuLy": None, "NgayTra": None, "TrangThaiHoSo": 9,
            "KenhThucHien": None, "_CoKetQuaDienTu": 0, "_TaiSuDungDuLieu": None, "_row_number": 8,
        },
    ]


def test_labels_in_nfd_case_spacing_and_alternatives() -> None:
    p = parse("03_dossiers_label_variants.xlsx")
    assert (p.header_row, p.unknown_columns) == (2, [])
    assert p.columns == {
        "MaHoSo": "MÃ HỒ SƠ", "MaTTHC": "Mã thủ tục", "TenTTHC": "Tên thủ tục", "NgayTiepNhan": "Ngày tiếp nhận",
        "NgayHenTra": "ngày hẹn trả", "NgayKetThucXuLy": "Ngày có kết quả", "TrangThaiHoSo": "Trạng thái",
        "KenhThucHien": "Kênh nộp", "ChuHoSo": "Chủ hồ sơ:", "SoGiayToChuHoSo": "Số giấy tờ",
    }
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240301-00021", "MaTTHC": "1.001653.000.00.00.H08",
            "TenTTHC": "Đăng ký khai sinh", "NgayTiepNhan": "20240301080500", "NgayHenTra": "20240305000000",
            "NgayKetThucXuLy": "20240304100000", "TrangThaiHoSo": 4, "KenhThucHien": 2,
            "ChuHoSo": "Nguyễn Văn Giang", "SoGiayToChuHoSo": "79123456789", "_row_number": 3,
        },
        {
            "MaHoSo": "000.00.15.H08-240302-00022", "MaTTHC": "2.002621.H08", "TenTTHC": "Chứng thực",
            "NgayTiepNhan": "20240302073000", "NgayHenTra": "20240304000000", "NgayKetThucXuLy": "20240304160000",
            "TrangThaiHoSo": 2, "KenhThucHien": 1, "ChuHoSo": "Hồ Thị Hoa", "SoGiayToChuHoSo": None,
            "_row_number": 4,
        },
    ]
    assert p.records[0]["ChuHoSo"] == "Nguy\u1ec5n V\u0103n Giang"  # NFC, single spaces
    assert p.warnings == [
        "column 'Số giấy tờ' holds numbers instead of text (rows 3): leading zeros may have been lost"
    ]


def test_unconvertible_values_are_kept_as_the_original_strings() -> None:
    p = parse("04_dossiers_bad_values.xlsx")
    assert p.unknown_columns == ["Ghi chú", "Người ký"]
    assert p.records == [
        {
            "MaHoSo": "H08-BAD-001", "NgayTiepNhan": "31/02/2024", "NgayHenTra": "2024/01/15",
            "TrangThaiHoSo": "Đang chờ duyệt", "KenhThucHien": "Qua Zalo", "DuocThanhToanTrucTuyen": "Có lẽ",
            "NgayCapNhat": "15/13/2024 10:00", "_row_number": 3,
        },
        {  # no key: still a record, for the checks to quarantine
            "MaHoSo": None, "NgayTiepNhan": "20240201080000", "NgayHenTra": "20240205000000", "TrangThaiHoSo": 4,
            "KenhThucHien": 1, "DuocThanhToanTrucTuyen": 0, "NgayCapNhat": "20240201080000", "_row_number": 4,
        },
        {  # a number in a date cell is not guessed to be an Excel serial; codes are not labels
            "MaHoSo": "H08-BAD-003", "NgayTiepNhan": "45306.5", "NgayHenTra": "25:00", "TrangThaiHoSo": "4",
            "KenhThucHien": "2", "DuocThanhToanTrucTuyen": 1, "NgayCapNhat": "01/02/2024 25:61", "_row_number": 5,
        },
    ]
    assert p.warnings == [
        "unknown columns ignored: 'Ghi chú', 'Người ký'",
        "2 value(s) in column 'Ngày tiếp nhận' are not a date (dd/MM/yyyy[ HH:mm[:ss]]) (rows 3, 5); "
        "kept as text for the quality checks",
        "2 value(s) in column 'Ngày hẹn trả' are not a date (dd/MM/yyyy[ HH:mm[:ss]]) (rows 3, 5); "
        "kept as text for the quality checks",
        "2 value(s) in column 'Trạng thái' are not a status label of table 1.5 (rows 3, 5); "
        "kept as text for the quality checks",
        "2 value(s) in column 'Kênh nộp' are not a channel label (Trực tiếp, Trực tuyến, Bưu chính công ích) "
        "(rows 3, 5); kept as text for the quality checks",
        "1 value(s) in column 'Thanh toán trực tuyến' are not Có/Không (rows 3); kept as text for the quality checks",
        "2 value(s) in column 'Ngày cập nhật' are not a date (dd/MM/yyyy[ HH:mm[:ss]]) (rows 3, 5); "
        "kept as text for the quality checks",
    ]


def test_csv_with_bom_semicolons_titles_sections_total() -> None:
    p = parse("05_dossiers_bom_semicolon.csv")
    assert (p.entity, p.sheet, p.delimiter, p.header_row) == ("dossiers", None, ";", 4)
    assert p.skipped == {"section": 2, "blank": 1, "total": 1}
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240401-00031", "TenTTHC": "Cấp giấy phép; gia hạn",
            "ChuHoSo": "Nguyễn Văn A, đại diện", "NgayTiepNhan": "20240401080059", "TrangThaiHoSo": 8,
            "KenhThucHien": 2, "_row_number": 6,
        },
        {
            "MaHoSo": "000.31.15.H08-240402-00032", "TenTTHC": "Đăng ký kết hôn", "ChuHoSo": "Trần Thị B",
            "NgayTiepNhan": "20240402133000", "TrangThaiHoSo": 7, "KenhThucHien": 1, "_row_number": 9,
        },
    ]


def test_csv_with_commas_no_bom_and_absent_fields() -> None:
    p = parse("06_dossiers_comma_nobom.csv")
    assert (p.delimiter, p.header_row, p.rows_skipped) == (",", 1, 0)
    assert p.records == [
        {
            "MaHoSo": "000.00.15.H08-240501-00041", "TrangThaiHoSo": 1, "NgayTiepNhan": "20240501070000",
            "KenhThucHien": None, "NgayCapNhat": "20240501070000", "_row_number": 2,
        },
        {
            "MaHoSo": "000.00.15.H08-240502-00042", "TrangThaiHoSo": 3, "NgayTiepNhan": "20240502000000",
            "KenhThucHien": 2, "NgayCapNhat": "20240503091000", "_row_number": 3,
        },
    ]
    # what the file does not carry stays absent (null downstream), never false
    assert all("DuocThanhToanTrucTuyen" not in r and "_CoKetQuaDienTu" not in r for r in p.records)


def test_payments_amounts_labels_and_total_row() -> None:
    p = parse("07_payments_titles_total.xlsx")
    assert (p.entity, p.sheet, p.header_row, p.skipped) == ("payments", "Thanh toán", 5, {"total": 1})
    assert p.warnings == []
    assert p.records == [
        {
            "Ma": "TT-0001", "MaHoSo": "000.00.15.H08-240115-00012", "SoTien": 1234000, "Phi": 1000000,
            "LePhi": 234000, "TrangThai": "Đã thanh toán", "HinhThucThanhToan": "truc-tuyen",
            "HinhThucThu": "Thu trước", "NgayYeuCau": "20240115083000", "NgayThuPhi": "20240115090211",
            "MaGiaoDich": "PAY123456", "NgayCapNhat": "20240115090211", "_row_number": 6,
        },
        {
            "Ma": "TT-0002", "MaHoSo": "000.00.15.H08-240116-00013", "SoTien": 50000, "Phi": 50000, "LePhi": 0,
            "TrangThai": "Chờ thanh toán", "HinhThucThanhToan": "tien-mat", "HinhThucThu": "Thu sau",
            "NgayYeuCau": "20240116074500", "NgayThuPhi": None, "MaGiaoDich": None,
            "NgayCapNhat": "20240116074500", "_row_number": 7,
        },
        {
            "Ma": "TT-0003", "MaHoSo": "000.31.15.H08-240120-00001", "SoTien": 20000, "Phi": 20000, "LePhi": 0,
            "TrangThai": "Đã hoàn phí", "HinhThucThanhToan": "chuyen-khoan", "HinhThucThu": "Đối tượng miễn phí",
            "NgayYeuCau": "20240122080000", "NgayThuPhi": "20240122090000", "MaGiaoDich": "CK-778",
            "NgayCapNhat": "20240201100000", "_row_number": 8,
        },
    ]


def test_payments_csv_alternative_labels_and_bad_amount() -> None:
    p = parse("08_payments_alt_labels_semicolon.csv")
    assert (p.entity, p.delimiter, p.header_row) == ("payments", ";", 2)
    assert p.columns["NgayThuPhi"] == "Ngày thanh toán"
    assert p.records == [
        {
            "Ma": "TT-0101", "MaHoSo": "H08-0101", "SoTien": "abc", "TrangThai": "Đã thanh toán",
            "HinhThucThanhToan": "Ví điện tử", "HinhThucThu": "Thu trước", "NgayThuPhi": "20240605101100",
            "_row_number": 3,
        },
        {
            "Ma": "TT-0102", "MaHoSo": "H08-0102", "SoTien": 300000, "TrangThai": "Hủy thanh toán",
            "HinhThucThanhToan": None, "HinhThucThu": "Thu sau", "NgayThuPhi": None, "_row_number": 4,
        },
    ]
    assert p.records[0]["TrangThai"] == "\u0110\u00e3 thanh to\u00e1n"  # NFC although the file is NFD
    assert len(p.warnings) == 2 and "'Số tiền'" in p.warnings[0] and "'Hình thức thanh toán'" in p.warnings[1]


def test_second_sheet_five_titles_repeated_header_and_notes() -> None:
    p = parse("09_dossiers_second_sheet.xlsx")
    assert (p.sheet, p.header_row) == ("Dữ liệu", 7)
    assert p.skipped == {"header": 1, "blank": 1, "note": 2}
    assert p.records == [
        {"MaHoSo": "H08-SHEET-001", "NgayTiepNhan": "20240603080000", "TrangThaiHoSo": 6,
         "NgayCapNhat": "20240603080000", "_row_number": 8},
        {"MaHoSo": "H08-SHEET-002", "NgayTiepNhan": "20240604090000", "TrangThaiHoSo": 8,
         "NgayCapNhat": "20240604093000", "_row_number": 10},
    ]
    assert p.warnings == [
        "row 12: note row skipped: 'Người lập biểu'",
        "row 13: note row skipped: 'Tuy Phước, ngày 30 tháng 6 năm 2024'",
    ]


def test_payments_two_row_header() -> None:
    p = parse("10_payments_two_row_header.xlsx")
    assert (p.entity, p.header_row, p.header_rows, p.unknown_columns) == ("payments", 2, 2, [])
    assert p.columns["Phi"] == "Phí (đồng)"
    assert p.records == [
        {
            "Ma": "TT-0201", "MaHoSo": "H08-0201", "SoTien": 100000, "Phi": 100000, "LePhi": 0,
            "HinhThucThanhToan": "truc-tuyen", "TrangThai": "Đã thanh toán", "NgayThuPhi": "20240610100005",
            "MaGiaoDich": "VNPAY-1", "NgayYeuCau": "20240610090000", "HinhThucThu": "Thu trước", "_row_number": 4,
        },
        {
            "Ma": "TT-0202", "MaHoSo": "H08-0202", "SoTien": 0, "Phi": 0, "LePhi": 0, "HinhThucThanhToan": None,
            "TrangThai": "Chưa thanh toán", "NgayThuPhi": None, "MaGiaoDich": None, "NgayYeuCau": "20240611000000",
            "HinhThucThu": "Đối tượng miễn phí", "_row_number": 5,
        },
    ]


# --- the corpus: broken files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken_empty.csv", "empty file (0 bytes)"),
        ("broken_corrupt.xlsx", "not a readable .xlsx workbook"),
        ("broken_legacy.xls", "old Excel 97-2003 (.xls)"),
        ("broken_html.xls", "an HTML/XML page, not a spreadsheet"),
        ("broken_cp1258.csv", "not UTF-8 text"),
        ("broken_utf16.csv", "UTF-16 text"),
        ("broken_no_header.xlsx", "no header row found in the first 30 rows of sheet(s) 'Sheet'"),
        ("broken_missing_ma_ho_so.xlsx", "missing required column 'Mã hồ sơ' (dossier list; header row 2"),
        ("broken_payments_missing_ma.csv", "missing required column 'Mã thanh toán' (payment list"),
        ("broken_empty_sheet.xlsx", "empty workbook: no sheet has any cell"),
    ],
)
def test_broken_files_raise_a_file_level_error(name: str, message: str) -> None:
    with pytest.raises(FileFormatError) as err:
        parse(name)
    assert message in str(err.value)
    assert str(err.value).startswith(str(FILES / name) + ": ")  # names the file
    assert err.value.path == FILES / name and message in err.value.message


def test_missing_file_is_a_file_level_error(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="cannot read the file"):
        parse_file(tmp_path / "nope.xlsx")


def test_corpus_has_at_least_ten_good_and_five_broken_files() -> None:
    names = [p.name for p in FILES.iterdir()]
    assert sum(not n.startswith("broken_") for n in names) >= 10
    assert sum(n.startswith("broken_") for n in names) >= 5


# --- smaller behaviours -----------------------------------------------------------------------


def _csv(tmp_path: Path, text: str, name: str = "x.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_format_is_told_by_content_not_extension(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Mã hồ sơ,Trạng thái\nH08-1,Đang xử lý\n", name="export.xlsx")
    assert parse_file(path).records == [{"MaHoSo": "H08-1", "TrangThaiHoSo": 4, "_row_number": 2}]


def test_ambiguous_list_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, "Mã hồ sơ,Ngày tiếp nhận,Số tiền\nH08-1,01/01/2024,1.000\n")
    with pytest.raises(FileFormatError, match="cannot tell a dossier list from a payment list"):
        parse_file(path)


def test_every_data_row_becomes_a_record(tmp_path: Path) -> None:
    lines = ["Mã hồ sơ;Trạng thái;Ngày tiếp nhận"] + [f"H08-{i};???;xx/{i}" for i in range(50)] + [";Đang xử lý;"]
    parsed = parse_file(_csv(tmp_path, "\n".join(lines)))
    assert len(parsed.records) == 51 and parsed.rows_skipped == 0
    assert parsed.records[-1] == {"MaHoSo": None, "TrangThaiHoSo": 4, "NgayTiepNhan": None, "_row_number": 52}


def test_duplicate_column_reads_the_first(tmp_path: Path) -> None:
    parsed = parse_file(_csv(tmp_path, "Mã hồ sơ,Mã TTHC,Mã thủ tục\nH08-1,A.1,B.2\n"))
    assert parsed.records == [{"MaHoSo": "H08-1", "MaTTHC": "A.1", "_row_number": 2}]
    assert parsed.warnings == ["column 'Mã thủ tục' repeats 'Mã TTHC' (MaTTHC); the first one is read"]


def test_header_only_file_has_no_records_and_says_so(tmp_path: Path) -> None:
    parsed = parse_file(_csv(tmp_path, "\ufeffMã hồ sơ;Trạng thái\n"))
    assert parsed.records == [] and parsed.warnings == ["no data rows under the header"]


def test_normalize_label() -> None:
    nfd = "Nga\u0300y tie\u0302\u0301p nha\u0323\u0302n"
    assert normalize_label(nfd) == normalize_label("NGÀY  TIẾP\u00a0NHẬN ") == "ngày tiếp nhận"
    assert normalize_label("Chủ hồ sơ (*):") != "chủ hồ sơ"  # parentheses are handled at lookup only
    assert normalize_label("Mã hồ sơ:") == "mã hồ sơ"


def test_content_hash(tmp_path: Path) -> None:
    src = FILES / "01_dossiers_titles_sections.xlsx"
    copy = tmp_path / "renamed.xlsx"
    shutil.copy(src, copy)
    assert content_hash(src) == content_hash(copy) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert content_hash(src) != content_hash(FILES / "02_dossiers_two_row_header.xlsx")


_moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_moments, st.sampled_from(["%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y"]),
                  st.integers(0, 10**10), st.booleans()),
        min_size=1, max_size=15,
    )
)
def test_dates_and_amounts_round_trip(tmp_path_factory: pytest.TempPathFactory, rows: list[Any]) -> None:
    lines = ["Mã thanh toán;Mã hồ sơ;Ngày yêu cầu;Số tiền"]
    expected = []
    for i, (moment, fmt, amount, dotted) in enumerate(rows):
        text_amount = f"{amount:,}".replace(",", ".") if dotted else str(amount)
        lines.append(f"P{i};H{i};{moment.strftime(fmt)};{text_amount}")
        shown = datetime.strptime(moment.strftime(fmt), fmt)
        expected.append({"Ma": f"P{i}", "MaHoSo": f"H{i}", "NgayYeuCau": shown.strftime("%Y%m%d%H%M%S"),
                         "SoTien": amount, "_row_number": i + 2})
    path = tmp_path_factory.mktemp("rt") / "p.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert parse_file(path).records == expected


def test_a_large_csv_parses_every_row(tmp_path: Path) -> None:
    header = "STT;Mã hồ sơ;Mã TTHC;Chủ hồ sơ;Ngày nộp;Ngày tiếp nhận;Ngày hẹn trả;Trạng thái;Kênh nộp;Ngày cập nhật"
    row = "{i};H08-{i:06d};1.001653.000.00.00.H08;Nguyễn Văn A;01/02/2024 08:00;01/02/2024 08:10;05/02/2024;" \
          "Đã trả kết quả;Trực tuyến;05/02/2024 10:00:00"
    path = tmp_path / "big.csv"
    path.write_text("\n".join([header] + [row.format(i=i) for i in range(50_000)]), encoding="utf-8")
    parsed = parse_file(path)
    assert len(parsed.records) == 50_000
    assert parsed.records[-1]["MaHoSo"] == "H08-049999" and parsed.records[-1]["TrangThaiHoSo"] == 10


# --- the project's simulator exports (if present) ---------------------------------------------

_HAS_EXPORT = all(
    importlib.util.find_spec(m) is not None for m in ("tasks.simulator.export", "tasks.simulator.dataset")
)


@pytest.mark.skipif(not _HAS_EXPORT, reason="tasks/simulator/export.py not built yet")
def test_simulator_exports_round_trip(tmp_path: Path) -> None:
    """Every export layout of the simulator parses back to the dataset's records, for the fields
    files can carry (dates only to the precision the layout prints)."""
    from tasks.simulator.dataset import generate
    from tasks.simulator.export import export_files

    dataset = generate(seed=5, n_dossiers=300)
    paths = export_files(dataset, tmp_path)
    truth = {"dossiers": {r["MaHoSo"]: r for r in dataset.dossiers}, "payments": {r["Ma"]: r for r in dataset.payments}}
    key = {"dossiers": "MaHoSo", "payments": "Ma"}
    assert len(paths) == 8
    for path in paths:
        parsed = parse_file(path)
        assert parsed.entity == path.name.split("_")[0]
        assert set(parsed.unknown_columns) <= {"Ghi chú"}, path.name
        assert [w for w in parsed.warnings if not w.startswith("unknown columns")] == [], path.name
        assert sorted(r[key[parsed.entity]] for r in parsed.records) == sorted(truth[parsed.entity]), path.name
        for record in parsed.records:
            expected = _file_view(parsed.entity, truth[parsed.entity][record[key[parsed.entity]]])
            for name, value in record.items():
                if name != "_row_number":
                    assert _same(value, expected[name]), (path.name, record["_row_number"], name, value)


def _file_view(entity: str, api: dict[str, Any]) -> dict[str, Any]:
    """What an export can say about an API record, in the parser's conventions."""
    view = {k: (None if v in ("", None) else v) for k, v in api.items()}
    if entity == "dossiers":
        view["KenhThucHien"] = int(api["KenhThucHien"]) if api.get("KenhThucHien") else None
        view["DuocThanhToanTrucTuyen"] = int(api["DuocThanhToanTrucTuyen"] in (1, 2))
        view["_CoKetQuaDienTu"] = int(any(r.get("DuongDanTepTinKetQua") for r in api["DanhSachGiayToKetQua"]))
        view["_TaiSuDungDuLieu"] = int(any(t.get("DuocTaiSuDung") == 1 for t in api["TaiLieuNop"]))
    return view


def _same(parsed: Any, original: Any) -> bool:
    if isinstance(original, str) and len(original) == 14 and original.isdigit() and isinstance(parsed, str):
        # a layout may print only the minutes or only the day
        return parsed in (original, original[:12] + "00", original[:8] + "000000")
    if isinstance(original, str):
        return parsed == " ".join(original.split())
    return parsed == original

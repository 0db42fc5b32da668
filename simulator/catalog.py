"""Static reference data of the simulator: units, procedures, names, labels.

Everything here is fake but plausible for Tuy Phước district (Bình Định province, code H08).
Codes follow the shapes of the provincial one-stop system (`000.00.15.H08`, `1.001653.000.00.00.H08`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

RESTRUCTURE_DAY = date(2025, 7, 1)
"""From this day the district level no longer exists (the 2025 restructuring)."""

STATUS_LABELS: dict[int, str] = {
    1: "Mới đăng ký",
    2: "Được tiếp nhận",
    3: "Không được tiếp nhận",
    4: "Đang xử lý",
    5: "Yêu cầu bổ sung giấy tờ",
    6: "Yêu cầu thực hiện nghĩa vụ tài chính",
    7: "Công dân yêu cầu rút hồ sơ",
    8: "Dừng xử lý",
    9: "Đã xử lý xong",
    10: "Đã trả kết quả",
}
CHANNEL_LABELS: dict[int, str] = {1: "Trực tiếp", 2: "Trực tuyến", 3: "Bưu chính công ích"}
PAYMENT_STATUSES: tuple[str, ...] = (
    "Đã thanh toán",
    "Chờ thanh toán",
    "Chưa thanh toán",
    "Đã hoàn phí",
    "Hủy thanh toán",
)
PAY_PAID, PAY_WAITING, PAY_UNPAID, PAY_REFUNDED, PAY_CANCELLED = range(5)
PAYMENT_METHODS: tuple[str | None, ...] = (None, "truc-tuyen", "tien-mat", "chuyen-khoan")
PAYMENT_METHOD_LABELS: dict[str, str] = {
    "truc-tuyen": "Trực tuyến",
    "tien-mat": "Tiền mặt",
    "chuyen-khoan": "Chuyển khoản",
}
COLLECTION_MODES: tuple[str | None, ...] = (None, "Thu trước", "Thu sau", "Đối tượng miễn phí")
THU_NONE, THU_TRUOC, THU_SAU, THU_MIEN = range(4)


@dataclass(frozen=True)
class UnitRow:
    """One validity row of a unit (a code can have several rows)."""

    code: str
    name: str
    level: int
    parent: str | None
    valid_from: date
    valid_to: date | None = None
    successor: str | None = None


@dataclass(frozen=True)
class Procedure:
    """A procedure of the catalogue and the simulator's knobs for it."""

    code: str
    name: str
    sector_code: str
    sector_name: str
    levels: tuple[int, ...]
    time: int
    time_unit: str  # ngay-lam-viec | ngay | gio
    mucdo: int
    phi: int = 0
    lephi: int = 0
    online_payment: int = 0
    paper_result: int = 1
    weight: float = 1.0
    handler: str = "xa"  # "xa" = communes, otherwise a district/province unit code
    multiplier_max: int = 1  # pages or copies: the fee is multiplied by 1..multiplier_max
    thu_sau_share: float = 0.3
    uncollected_share: float = 0.01  # resolved dossiers whose result is never collected (status 9)
    documents: tuple[str, ...] = ("Tờ khai", "Giấy tờ tùy thân")
    result_name: str = "Kết quả giải quyết"
    fee_names: tuple[str, str] = ("Phí", "Lệ phí")

    @property
    def has_fee(self) -> bool:
        """True when the procedure charges a fee or a charge."""
        return self.phi > 0 or self.lephi > 0


def _u(code: str, name: str, level: int, parent: str | None, since: date = date(2019, 1, 1)) -> UnitRow:
    return UnitRow(code, name, level, parent, since)


PROVINCE = "000.00.00.H08"
DISTRICT = "000.00.15.H08"
SO_TU_PHAP = "000.08.00.H08"
P_TUPHAP = "000.15.01.H08"
P_VHTT = "000.15.02.H08"
P_KTHT = "000.15.03.H08"
P_TCKH = "000.15.04.H08"
VP_UBND = "000.15.05.H08"
BQL_KCN = "000.15.50.H08"

COMMUNES: tuple[tuple[str, str, float], ...] = (
    ("000.15.31.H08", "UBND Thị trấn Tuy Phước", 1.6),
    ("000.15.32.H08", "UBND Thị trấn Diêu Trì", 1.5),
    ("000.15.33.H08", "UBND xã Phước Hưng", 0.9),
    ("000.15.34.H08", "UBND xã Phước Quang", 0.9),
    ("000.15.35.H08", "UBND xã Phước Hòa", 0.8),
    ("000.15.36.H08", "UBND xã Phước Sơn", 1.2),
    ("000.15.37.H08", "UBND xã Phước Thắng", 0.9),
    ("000.15.38.H08", "UBND xã Phước Hiệp", 1.0),
    ("000.15.39.H08", "UBND xã Phước Lộc", 1.1),
    ("000.15.40.H08", "UBND xã Phước Nghĩa", 0.7),
    ("000.15.41.H08", "UBND xã Phước An", 1.2),
    ("000.15.42.H08", "UBND xã Phước Thành", 0.8),
    ("000.15.43.H08", "UBND xã Phước Thuận", 1.0),
)
# Communes created on 2025-07-01 (two-level local government), with the old units they absorb.
NEW_COMMUNES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("000.21.01.H08", "UBND xã Tuy Phước", ("000.15.31.H08", "000.15.40.H08", DISTRICT, VP_UBND)),
    ("000.21.02.H08", "UBND xã Tuy Phước Đông", ("000.15.34.H08", "000.15.35.H08", "000.15.37.H08", P_TUPHAP)),
    ("000.21.03.H08", "UBND xã Tuy Phước Tây", ("000.15.38.H08", "000.15.39.H08", "000.15.41.H08", P_VHTT, BQL_KCN)),
    ("000.21.04.H08", "UBND xã Tuy Phước Bắc", ("000.15.33.H08", "000.15.42.H08", "000.15.43.H08", P_KTHT)),
    ("000.21.05.H08", "UBND phường Diêu Trì", ("000.15.32.H08", "000.15.36.H08", P_TCKH)),
)


def unit_rows(start: date, end: date) -> list[UnitRow]:
    """The unit catalogue for a simulation over [start, end].

    The level-changing unit (`BQL_KCN`) is a commune-level unit that becomes district-level on
    the first day of the month in the middle of the range. When the range reaches the 2025
    restructuring, district-level units and communes end on 2025-06-30 and get successors.
    """
    restructure = end >= RESTRUCTURE_DAY
    switch = _level_switch_day(start, end)
    rows: list[UnitRow] = [
        _u(PROVINCE, "UBND tỉnh Bình Định", 1, None),
        _u(SO_TU_PHAP, "Sở Tư pháp tỉnh Bình Định", 1, PROVINCE),
        _u(DISTRICT, "UBND huyện Tuy Phước", 2, PROVINCE),
        _u(P_TUPHAP, "Phòng Tư pháp huyện Tuy Phước", 2, DISTRICT),
        _u(P_VHTT, "Phòng Văn hóa - Thông tin huyện Tuy Phước", 2, DISTRICT),
        _u(P_KTHT, "Phòng Kinh tế - Hạ tầng huyện Tuy Phước", 2, DISTRICT),
        _u(P_TCKH, "Phòng Tài chính - Kế hoạch huyện Tuy Phước", 2, DISTRICT),
        _u(VP_UBND, "Văn phòng HĐND và UBND huyện Tuy Phước", 2, DISTRICT),
    ]
    rows += [_u(code, name, 3, DISTRICT) for code, name, _w in COMMUNES]
    bql = "Ban Quản lý cụm công nghiệp Phước An"
    rows.append(UnitRow(BQL_KCN, bql, 3, DISTRICT, date(2019, 1, 1), _day_before(switch)))
    rows.append(UnitRow(BQL_KCN, bql, 2, DISTRICT, switch))
    if not restructure:
        return rows
    successor = {old: new for new, _n, olds in NEW_COMMUNES for old in olds}
    out: list[UnitRow] = []
    for r in rows:
        if r.code in successor and r.valid_to is None:
            r = UnitRow(r.code, r.name, r.level, r.parent, r.valid_from, date(2025, 6, 30), successor[r.code])
        out.append(r)
    out += [_u(code, name, 3, PROVINCE, RESTRUCTURE_DAY) for code, name, _o in NEW_COMMUNES]
    return out


def _day_before(d: date) -> date:
    return date.fromordinal(d.toordinal() - 1)


def _level_switch_day(start: date, end: date) -> date:
    mid = date.fromordinal((start.toordinal() + min(end, date(2025, 6, 1)).toordinal()) // 2)
    if mid <= start:
        mid = date.fromordinal(start.toordinal() + 1)
    return mid.replace(day=1) if mid.replace(day=1) > start else mid


_CIVIL_DOCS = ("Tờ khai", "Giấy tờ tùy thân", "Giấy tờ chứng minh nơi cư trú")
_BUSINESS_DOCS = ("Giấy đề nghị", "Bản sao giấy tờ pháp lý của cá nhân", "Hợp đồng thuê địa điểm")

PROCEDURES: tuple[Procedure, ...] = (
    # --- commune level ---
    Procedure("1.001653.000.00.00.H08", "Đổi, cấp lại Giấy xác nhận khuyết tật", "BTXH", "Bảo trợ xã hội",
              (3,), 4, "ngay-lam-viec", 3, weight=1.2,
              documents=("Đơn đề nghị", "Bản sao Giấy xác nhận khuyết tật")),
    Procedure("1.001699.000.00.00.H08", "Xác định, xác định lại mức độ khuyết tật và cấp Giấy xác nhận khuyết tật",
              "BTXH", "Bảo trợ xã hội", (3,), 25, "ngay-lam-viec", 3, weight=0.8),
    Procedure("2.000635.000.00.00.H08", "Cấp bản sao trích lục hộ tịch", "HT", "Hộ tịch", (2, 3), 1,
              "ngay-lam-viec", 4, lephi=8000, online_payment=1, weight=4, multiplier_max=3, thu_sau_share=0.2,
              documents=("Tờ khai cấp bản sao trích lục hộ tịch",), result_name="Bản sao trích lục hộ tịch",
              fee_names=("Phí", "Lệ phí cấp bản sao trích lục hộ tịch")),
    Procedure("2.000815.000.00.00.H08",
              "Chứng thực bản sao từ bản chính giấy tờ, văn bản do cơ quan tổ chức có thẩm quyền của Việt Nam cấp",
              "CT", "Chứng thực", (2, 3), 4, "gio", 3, phi=2000, online_payment=1, weight=7, multiplier_max=10,
              thu_sau_share=0.75, documents=("Bản chính giấy tờ cần chứng thực",), result_name="Bản sao chứng thực",
              fee_names=("Phí chứng thực bản sao từ bản chính", "Lệ phí")),
    Procedure("2.000884.000.00.00.H08", "Chứng thực chữ ký trong các giấy tờ, văn bản", "CT", "Chứng thực",
              (2, 3), 4, "gio", 3, phi=10000, online_payment=1, weight=2, thu_sau_share=0.6,
              fee_names=("Phí chứng thực chữ ký", "Lệ phí")),
    Procedure("1.004837.000.00.00.H08", "Chứng thực hợp đồng, giao dịch liên quan đến tài sản là động sản",
              "CT", "Chứng thực", (3,), 2, "ngay-lam-viec", 2, phi=50000, weight=2,
              fee_names=("Phí chứng thực hợp đồng, giao dịch", "Lệ phí")),
    Procedure("1.001193.000.00.00.H08", "Đăng ký khai sinh", "HT", "Hộ tịch", (3,), 1, "ngay-lam-viec", 4,
              weight=12, documents=("Tờ khai đăng ký khai sinh", "Giấy chứng sinh")),
    Procedure("1.000894.000.00.00.H08", "Đăng ký kết hôn", "HT", "Hộ tịch", (3,), 1, "ngay-lam-viec", 3,
              weight=3.5, documents=("Tờ khai đăng ký kết hôn", "Giấy xác nhận tình trạng hôn nhân")),
    Procedure("1.000656.000.00.00.H08", "Đăng ký khai tử", "HT", "Hộ tịch", (3,), 1, "ngay-lam-viec", 4, weight=3),
    Procedure("1.004873.000.00.00.H08", "Cấp Giấy xác nhận tình trạng hôn nhân", "HT", "Hộ tịch", (3,), 3,
              "ngay-lam-viec", 4, lephi=15000, online_payment=1, weight=2.5, thu_sau_share=0.3,
              fee_names=("Phí", "Lệ phí hộ tịch")),
    Procedure("1.004859.000.00.00.H08", "Đăng ký thay đổi, cải chính, bổ sung thông tin hộ tịch", "HT", "Hộ tịch",
              (3,), 3, "ngay-lam-viec", 3, lephi=15000, online_payment=1, weight=1.5,
              fee_names=("Phí", "Lệ phí hộ tịch")),
    Procedure("1.001022.000.00.00.H08", "Đăng ký nhận cha, mẹ, con", "HT", "Hộ tịch", (3,), 3, "ngay-lam-viec", 3,
              weight=0.4),
    Procedure("1.000689.000.00.00.H08", "Đăng ký giám hộ", "HT", "Hộ tịch", (3,), 3, "ngay-lam-viec", 3,
              weight=0.3),
    Procedure("2.002621.H08", "Giải quyết trợ cấp xã hội hàng tháng cho đối tượng bảo trợ xã hội",
              "BTXH", "Bảo trợ xã hội", (3,), 20, "ngay-lam-viec", 3, weight=2),
    Procedure("1.001758.000.00.00.H08", "Hỗ trợ chi phí mai táng cho đối tượng bảo trợ xã hội", "BTXH",
              "Bảo trợ xã hội", (3,), 10, "ngay", 2, weight=0.6),
    Procedure("2.000288.H08", "Xét tặng danh hiệu Gia đình văn hóa hằng năm", "VHCS", "Văn hóa cơ sở", (3,), 5,
              "ngay-lam-viec", 2, weight=0.5, paper_result=1),
    Procedure("2.001824.000.00.00.H08", "Hòa giải tranh chấp đất đai", "DD", "Đất đai", (3,), 45, "ngay", 2,
              weight=0.5, paper_result=0),
    Procedure("2.000535.000.00.00.H08", "Giải quyết khiếu nại lần đầu tại cấp xã", "KN", "Giải quyết khiếu nại",
              (3,), 30, "ngay", 2, weight=0.2, paper_result=0),
    Procedure("1.003596.000.00.00.H08", "Đăng ký hoạt động tín ngưỡng", "TG", "Tôn giáo", (3,), 15,
              "ngay-lam-viec", 2, weight=0.1),
    # --- district level ---
    Procedure("1.000903.000.00.00.H08", "Cấp giấy phép kinh doanh Karaoke", "VH", "Văn hóa", (2,), 5,
              "ngay-lam-viec", 3, phi=4000000, online_payment=1, weight=0.15, handler=P_VHTT, thu_sau_share=0.0,
              documents=_BUSINESS_DOCS, result_name="Giấy phép kinh doanh dịch vụ karaoke",
              fee_names=("Phí thẩm định cấp giấy phép kinh doanh karaoke", "Lệ phí")),
    Procedure("1.002425.000.00.00.H08",
              "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm đối với cơ sở sản xuất thực phẩm, kinh "
              "doanh dịch vụ ăn uống thuộc thẩm quyền của UBND cấp tỉnh",
              "ATTP", "An toàn thực phẩm", (1, 2), 20, "ngay-lam-viec", 3, phi=700000, online_payment=1,
              weight=0.35, handler=P_KTHT, thu_sau_share=0.0, documents=_BUSINESS_DOCS,
              result_name="Giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
              fee_names=("Phí thẩm định cơ sở đủ điều kiện an toàn thực phẩm", "Lệ phí")),
    # the 2024 report (III.5): results not collected within 60 days are cancelled, and many are not
    Procedure("2.000806.000.00.00.H08", "Đăng ký kết hôn có yếu tố nước ngoài", "HT", "Hộ tịch", (2,), 15,
              "ngay-lam-viec", 3, lephi=1500000, online_payment=1, weight=0.5, handler=P_TUPHAP,
              thu_sau_share=0.1, uncollected_share=0.4,
              fee_names=("Phí", "Lệ phí đăng ký kết hôn có yếu tố nước ngoài")),
    Procedure("1.001702.000.00.00.H08", "Đăng ký khai sinh có yếu tố nước ngoài", "HT", "Hộ tịch", (2,), 3,
              "ngay-lam-viec", 3, lephi=75000, online_payment=1, weight=0.1, handler=P_TUPHAP,
              fee_names=("Phí", "Lệ phí hộ tịch")),
    Procedure("2.000720.000.00.00.H08", "Đăng ký thành lập hộ kinh doanh", "TLHKD", "Thành lập và hoạt động "
              "của hộ kinh doanh", (2,), 3, "ngay-lam-viec", 4, lephi=100000, online_payment=1, weight=2.2,
              handler=P_TCKH, thu_sau_share=0.1, documents=_BUSINESS_DOCS,
              result_name="Giấy chứng nhận đăng ký hộ kinh doanh",
              fee_names=("Phí", "Lệ phí đăng ký hộ kinh doanh")),
    Procedure("2.000575.000.00.00.H08", "Đăng ký thay đổi nội dung đăng ký hộ kinh doanh", "TLHKD",
              "Thành lập và hoạt động của hộ kinh doanh", (2,), 3, "ngay-lam-viec", 4, lephi=50000,
              online_payment=1, weight=1.0, handler=P_TCKH, thu_sau_share=0.1, documents=_BUSINESS_DOCS,
              fee_names=("Phí", "Lệ phí đăng ký hộ kinh doanh")),
    Procedure("2.000383.000.00.00.H08", "Tạm ngừng hoạt động hộ kinh doanh", "TLHKD",
              "Thành lập và hoạt động của hộ kinh doanh", (2,), 3, "ngay-lam-viec", 4, weight=0.4,
              handler=P_TCKH),
    Procedure("1.000633.000.00.00.H08", "Cấp giấy phép bán lẻ rượu", "LT", "Lưu thông hàng hóa trong nước",
              (2,), 10, "ngay-lam-viec", 3, phi=1200000, online_payment=1, weight=0.15, handler=P_KTHT,
              thu_sau_share=0.0, documents=_BUSINESS_DOCS),
    Procedure("1.009994.000.00.00.H08", "Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ", "XD", "Hoạt động "
              "xây dựng", (2,), 15, "ngay-lam-viec", 3, lephi=75000, online_payment=1, weight=1.4, handler=P_KTHT,
              thu_sau_share=0.2, result_name="Giấy phép xây dựng",
              documents=("Đơn đề nghị cấp giấy phép xây dựng", "Giấy tờ về quyền sử dụng đất", "Bản vẽ thiết kế"),
              fee_names=("Phí", "Lệ phí cấp giấy phép xây dựng")),
    Procedure("1.009995.000.00.00.H08", "Cấp giấy phép sửa chữa, cải tạo đối với nhà ở riêng lẻ", "XD",
              "Hoạt động xây dựng", (2,), 15, "ngay-lam-viec", 3, lephi=75000, online_payment=1, weight=0.3,
              handler=P_KTHT, fee_names=("Phí", "Lệ phí cấp giấy phép xây dựng")),
    Procedure("1.008004.000.00.00.H08", "Chứng thực bản sao từ bản chính giấy tờ, văn bản do cơ quan tổ chức "
              "có thẩm quyền của nước ngoài cấp", "CT", "Chứng thực", (2,), 8, "gio", 3, phi=2000,
              online_payment=1, weight=0.8, handler=P_TUPHAP, multiplier_max=8, thu_sau_share=0.5,
              fee_names=("Phí chứng thực bản sao từ bản chính", "Lệ phí")),
    Procedure("1.000748.000.00.00.H08", "Cấp Giấy phép tổ chức lễ hội", "VH", "Văn hóa", (2,), 15, "ngay",
              2, weight=0.05, handler=P_VHTT),
    Procedure("2.002152.000.00.00.H08", "Giải quyết tranh chấp đất đai thuộc thẩm quyền của Chủ tịch UBND cấp "
              "huyện", "DD", "Đất đai", (2,), 45, "ngay", 2, weight=0.12, handler=VP_UBND, paper_result=0),
    Procedure("2.002154.000.00.00.H08", "Giải quyết khiếu nại lần đầu tại cấp huyện", "KN",
              "Giải quyết khiếu nại", (2,), 30, "ngay", 2, weight=0.08, handler=VP_UBND, paper_result=0),
    Procedure("1.005412.000.00.00.H08", "Cấp giấy xác nhận đăng ký kế hoạch bảo vệ môi trường", "MT",
              "Môi trường", (2,), 10, "ngay-lam-viec", 3, weight=0.2, handler=BQL_KCN, documents=_BUSINESS_DOCS),
    Procedure("1.010091.000.00.00.H08", "Thẩm định báo cáo kinh tế - kỹ thuật đầu tư xây dựng", "XD",
              "Hoạt động xây dựng", (2,), 20, "ngay-lam-viec", 2, phi=500000, weight=0.15, handler=BQL_KCN,
              thu_sau_share=0.0, fee_names=("Phí thẩm định dự án đầu tư xây dựng", "Lệ phí")),
    Procedure("2.001009.000.00.00.H08", "Cấp bản sao từ sổ gốc", "CT", "Chứng thực", (2, 3), 1,
              "ngay-lam-viec", 4, phi=3000, online_payment=1, weight=0.6, multiplier_max=2, handler=P_TUPHAP,
              fee_names=("Phí cấp bản sao từ sổ gốc", "Lệ phí")),
    # --- province level (the department of justice) ---
    Procedure("2.000488.000.00.00.H08", "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam", "LLTP",
              "Lý lịch tư pháp", (1,), 10, "ngay-lam-viec", 4, phi=200000, online_payment=1, weight=0.9,
              handler=SO_TU_PHAP, thu_sau_share=0.0, result_name="Phiếu lý lịch tư pháp",
              fee_names=("Phí cung cấp thông tin lý lịch tư pháp", "Lệ phí")),
    Procedure("1.000123.000.00.00.H08", "Cung cấp thông tin quy hoạch", "QH", "Quy hoạch", (1,), 7, "ngay",
              2, weight=0.05, handler=SO_TU_PHAP),
)

FAMILY_NAMES = ("Nguyễn", "Trần", "Lê", "Phạm", "Huỳnh", "Võ", "Phan", "Trương", "Bùi", "Đặng", "Đỗ", "Ngô",
                "Hồ", "Dương", "Đinh", "Lương", "Đoàn", "Tô", "Châu", "Mai")
MIDDLE_NAMES = ("Văn", "Thị", "Minh", "Ngọc", "Thanh", "Quốc", "Hữu", "Đức", "Thị Thu", "Thị Kim", "Công",
                "Xuân", "Thị Mỹ", "Hoàng", "Anh")
GIVEN_NAMES = ("An", "Bình", "Cường", "Dũng", "Hà", "Hải", "Hạnh", "Hoa", "Hùng", "Hương", "Lan", "Linh",
               "Long", "Mai", "Nam", "Ngọc", "Phúc", "Quang", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Vy", "Yến",
               "Khánh", "Lộc", "Nhân", "Phương", "Thịnh", "Trí", "Vinh", "Hiếu", "Nhung", "Duyên", "Tài")
BUSINESS_PREFIXES = ("Hộ kinh doanh", "Công ty TNHH", "Công ty cổ phần", "Hợp tác xã")
BUSINESS_WORDS = ("Phước Thịnh", "Tuy Phước Xanh", "Hoàng Phát", "Minh Khang", "An Nhơn", "Diêu Trì Food",
                  "Quy Nhơn Star", "Thành Đạt", "Sông Côn", "Gò Bồi")
PHONE_PREFIXES = (90, 91, 93, 94, 96, 97, 98, 32, 33, 34, 35, 36, 37, 38, 39, 70, 76, 77, 78, 79, 81, 82, 83,
                  84, 85, 86, 88, 89)


@dataclass
class Official:
    """An official of a unit who handles dossiers."""

    code: str
    name: str
    unit: str


@dataclass
class OfficialPool:
    """All officials, grouped by unit (index ranges into `officials`)."""

    officials: list[Official] = field(default_factory=list)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

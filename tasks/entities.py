"""The entity registry: every entity the pipeline reads, declared once.

Each module that needs to know about entities (the API client, the file reader, the normaliser,
the checks, the loader, the nightly run, retention) reads :data:`REGISTRY` instead of keeping its
own list. Adding a fifth entity means one :class:`Entity` here, its suite in ``expectations/``,
its tables in ``sql/migrations`` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entity:
    """One entity of the provincial export (the source contract, sections 1.1-1.4)."""

    name: str
    #: API key field(s): the record key of raw rows and quarantine rows, and what tells the
    #: records of two pages apart (:mod:`tasks.source_api`).
    key: tuple[str, ...]
    #: The ``core.<name>`` columns the key fields become.
    core_key: tuple[str, ...]
    #: Fields without which a record is not a row at all: the normaliser raises the suite's
    #: ``dvc_parse`` required rule for them (``required_<column>``, critical: quarantined).
    required: tuple[str, ...]
    #: True: a newer version (``NgayCapNhat``) wins and every version is kept
    #: (``core.dossier_versions``...). False: a catalogue; the last load wins.
    versioned: bool
    #: True: read nightly by ``updated_from`` watermark. False: a catalogue, read in full.
    incremental: bool
    #: The suite's rule for a key seen twice in one batch with different content: the normaliser
    #: raises it, with the rule's severity, for a tie it cannot break.
    key_unique_rule: str
    #: What the offices call it (work lists, the clerks' quarantine export).
    label_vi: str = ""
    #: Fields whose values are personal data (source contract 1.1): hashed or dropped by the
    #: normaliser, never shown in an alert or an export.
    personal: tuple[str, ...] = ()
    #: True: the clerk's file exports (``tasks/source_files.py``) carry this entity.
    in_files: bool = False

    @property
    def endpoint(self) -> str:
        """Path of the provincial API that serves this entity."""
        return f"/api/v1/{self.name}"

    @property
    def raw_table(self) -> str:
        return f"raw.{self.name}"

    @property
    def core_table(self) -> str:
        return f"core.{self.name}"

    def suite_path(self, expectations_dir: Path) -> Path:
        """The entity's Great Expectations suite (``expectations/<name>.json``)."""
        return expectations_dir / f"{self.name}.json"


REGISTRY: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            name="dossiers",
            label_vi="Hồ sơ",
            key=("MaHoSo",),
            core_key=("ma_ho_so",),
            required=("MaHoSo", "TrangThaiHoSo", "NgayCapNhat"),
            versioned=True,
            incremental=True,
            key_unique_rule="dossier_key_unique",
            personal=("ChuHoSo", "SoGiayToChuHoSo", "SoDienThoai"),
            in_files=True,
        ),
        Entity(
            name="payments",
            label_vi="Thanh toán",
            key=("Ma",),
            core_key=("ma",),
            required=("Ma", "MaHoSo", "TrangThai", "NgayCapNhat"),
            versioned=True,
            incremental=True,
            key_unique_rule="payment_key_unique",
            in_files=True,
        ),
        Entity(
            name="procedures",
            label_vi="Thủ tục",
            key=("MaTTHC",),
            core_key=("ma_tthc",),
            required=("MaTTHC",),
            versioned=False,
            incremental=False,
            key_unique_rule="procedure_key_unique",
        ),
        Entity(
            name="units",
            label_vi="Đơn vị",
            key=("MaDonVi", "HieuLucTu"),
            core_key=("ma_don_vi", "hieu_luc_tu"),
            required=("MaDonVi", "HieuLucTu"),
            versioned=False,
            incremental=False,
            key_unique_rule="unit_key_unique",
        ),
    )
}

#: Every entity name, in load order of a full run's data (dossiers first).
ENTITIES: tuple[str, ...] = tuple(REGISTRY)
#: Catalogues, synced first in a run (units before procedures: procedures name units).
CATALOGUES: tuple[str, ...] = ("units", "procedures")
#: Entities read incrementally by watermark, in run order.
INCREMENTAL: tuple[str, ...] = tuple(n for n, e in REGISTRY.items() if e.incremental)
#: Entities whose newer version wins.
VERSIONED: frozenset[str] = frozenset(n for n, e in REGISTRY.items() if e.versioned)
#: Every field of any entity whose values are personal data.
PERSONAL_FIELDS: tuple[str, ...] = tuple(f for e in REGISTRY.values() for f in e.personal)
#: Entities a clerk's file export can carry.
FILE_ENTITIES: tuple[str, ...] = tuple(n for n, e in REGISTRY.items() if e.in_files)

assert set(CATALOGUES) == {n for n, e in REGISTRY.items() if not e.incremental}, "CATALOGUES out of date"


def entity(name: str) -> Entity:
    """The registry entry for ``name``; ValueError naming the known entities otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown entity {name!r}; expected one of {', '.join(ENTITIES)}") from None

"""The normaliser gives exactly what its reference implementation gives, on every input.

The reference is the record-by-record implementation of ``tasks/normalize.py``,
``tasks/field_types.py`` and ``tasks/dossier_lists.py`` as of commit :data:`REFERENCE` (before
the vectorised paths), read from git into a private package. Every frame of the result
(``core``, ``raw``, ``issues``, ``versions``, ``supplements``: values, dtypes, Arrow types, index),
``raw_by_key`` and the counts must be the same, on simulator records as the API sends them and on
seeded random hostile mutations of them (wrong types, numeric strings, blanks, NFD text,
whitespace, integers beyond 64 bits, bad timestamps, malformed nested lists, missing and duplicate
keys, non-objects). Skipped where git or that commit is not available (an installed wheel).
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import unicodedata
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from tasks.normalize import Normalized, normalize

REPO = Path(__file__).resolve().parents[1]
#: The commit holding the reference (record-by-record) implementation.
REFERENCE = "31c7f375d53d129161fb6b73aba845f0ae2f91cc"
_MODULES = ("field_types", "dossier_lists", "normalize")
KEY = b"equivalence-key"


def load_reference(commit: str = REFERENCE) -> ModuleType | None:
    """The reference ``normalize`` module (its ``field_types`` and ``dossier_lists`` beside it),
    loaded from git as package ``_normref``; None when git or the commit is not available."""
    name = "_normref"
    if f"{name}.normalize" in sys.modules:
        return sys.modules[f"{name}.normalize"]
    sources = {}
    for mod in _MODULES:
        try:
            out = subprocess.run(["git", "show", f"{commit}:tasks/{mod}.py"], cwd=REPO, capture_output=True,
                                 check=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        text = out.stdout.decode()
        for other in _MODULES:
            text = text.replace(f"from tasks.{other} import", f"from {name}.{other} import")
        sources[mod] = text
    pkg = ModuleType(name)
    pkg.__path__ = []
    sys.modules[name] = pkg
    for mod in _MODULES:
        spec = importlib.util.spec_from_loader(f"{name}.{mod}", loader=None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"{name}.{mod}"] = module
        exec(compile(sources[mod], f"<{commit[:8]}:tasks/{mod}.py>", "exec"), module.__dict__)  # noqa: S102
    return sys.modules[f"{name}.normalize"]


# ----------------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------------
def _arrow_type(s: pd.Series) -> Any:
    arr = s.array
    data = getattr(arr, "_pa_array", None)
    return None if data is None else data.type


def assert_same_frame(got: pd.DataFrame | None, want: pd.DataFrame | None, what: str) -> None:
    if want is None or got is None:
        assert got is None and want is None, f"{what}: one is None"
        return
    assert list(got.columns) == list(want.columns), f"{what}: columns"
    assert [str(t) for t in got.dtypes] == [str(t) for t in want.dtypes], f"{what}: dtypes"
    assert [repr(t) for t in got.dtypes] == [repr(t) for t in want.dtypes], f"{what}: dtypes (storage)"
    for col in want.columns:
        assert _arrow_type(got[col]) == _arrow_type(want[col]), f"{what}.{col}: Arrow type"
    assert type(got.index) is type(want.index), f"{what}: index type"
    pd.testing.assert_frame_equal(got, want, check_dtype=True, check_exact=True, check_index_type=True,
                                  check_column_type=True, check_flags=True, check_freq=True, obj=what)


def assert_same(got: Normalized, want: Any) -> None:
    """Everything of two normalise results is equal (frames exactly, with their dtypes)."""
    for name in ("core", "raw", "issues", "versions", "supplements"):
        assert_same_frame(getattr(got, name), getattr(want, name), name)
    assert (got.entity, got.rows_received, got.rows_duplicate, got.rows_read) == (
        want.entity, want.rows_received, want.rows_duplicate, want.rows_read)
    assert list(got.raw_by_key.items()) == list(want.raw_by_key.items()), "raw_by_key"


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def api_records(ds: Any, entity: str) -> list[Any]:
    """Every record of ``entity`` as a client reads it from the simulator's API (quirks included)."""
    if entity not in ("dossiers", "payments"):
        return orjson.loads(ds.render_json(entity, np.arange(ds.count(entity))))
    return [orjson.loads(t) for t in ds.record_texts(entity, np.arange(ds.count(entity)))]


class _Key(str):
    """A string of a subclass (orjson and Arrow may treat it unlike a str)."""


_VIET = "Ủy ban nhân dân xã Phước Hòa — Hồ sơ đất đai"
SCALARS: list[Any] = [
    None, "", " ", "\t", "  7 ", "7", "007", "0", "-3", "+3", "3.0", "1e3", "0x1F", "١٢٣", "１２", "²", "abc",
    3.0, 2.5, -0.0, float("nan"), float("inf"), 1e308, True, False, 0, 1, -1, 2, 32767, 32768, -32767, -32768,
    2**62, 2**62 + 1, -(2**62), 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70, -(2**63), -(2**63) - 1, -(2**70),
    "99999999999999999999999", "0000000000000000000000012", "4611686018427387904", "4611686018427387905",
    unicodedata.normalize("NFD", _VIET), unicodedata.normalize("NFC", _VIET), "\u00a0x", "x\u3000", "\x0bx",
    "x\x1c", "\x85y", "y\u2028", "x\u200b", "\ufeffx", "Đ" * 30, "\ud7ff\ue000\U0010ffff", "x" * 500, "\x00",
    "=1+1", "NULL", "a|b", "|", "H-1|", "20240105100000", " 20240105100000", "20240105100000 ",
    "20240231000000", "20241301000000", "20240101250000", "20240101126000", "20240101120060",
    "18991231235959", "19000101000000", "22001231235959", "22010101000000", "2024010510000",
    "202401051000000", "２０２４０１０１１２００００", "2024010112000٠", "20240229120000", "20230229120000",
    "21000229000000", "20000229000000", "00000000000000", "99999999999999", "-2024010112000", "31/02/2024",
    "2024-01-05 10:00:00", "20240101", "20240230", "2024013", "202401011", "20241231", " 20240101",
    [], [1], ["a", "b"], {}, {"a": 1}, [[]], [{"x": None}], {1: "x", "a": None}, [{"b": {2: 3, "1": 4}}],
    {None: 1, True: 2, 1.5: 3, "z": 0}, {_Key("k"): 1}, Decimal("1.10"), date(2024, 1, 5), b"20240105100000",
    _Key("20240105100000"), _Key("x"),
]
NESTED: dict[str, list[Any]] = {
    "TaiLieuNop": ["x", 5, {}, [1], [None], [{}], [{"DuocSoHoa": "1"}], [{"DuocSoHoa": 2}],
                   [{"DuocSoHoa": True}], [{"DuocTaiSuDung": 1, "DuocLayTuKhoDMQG": 1}],
                   [{"DuocTaiSuDung": "x"}], [{"DuocLayTuKhoDMQG": ""}], [{"DuocSoHoa": 1.0}], [{"DuocSoHoa": 2**70}]],
    "DanhSachGiayToKetQua": ["x", [1], [{}], [{"DuongDanTepTinKetQua": 5}], [{"DuongDanTepTinKetQua": "  "}],
                             [{"DuongDanTepTinKetQua": "http://x"}], [{"DuongDanTepTinKetQua": None}], [[]]],
    "DanhSachLePhi": ["x", [1], [{}], [{"Gia": "100"}], [{"Gia": None}], [{"Gia": 1.5}], [{"Gia": True}],
                      [{"Gia": -5}], [{"Gia": 2**70}], [{"Gia": "abc"}], [{"Gia": 0}, {"Gia": 7}]],
    "DanhSachHoSoBoSung": ["x", [1], [{}], [None], [{"NgayBoSung": "bad"}], [{"NgayBoSung": "20240101000000"}],
                           [{"NgayBoSung": "", "NgayHenTraMoi": "20240231000000"}], [{"NgayBoSung": 20240101000000}],
                           [{"NgayTiepNhanBoSung": " 20240101000000"}], [{}, 5]],
    "_TaiSuDungDuLieu": ["1", 1, 0, 2, "", None, "x", True],
    "_CoKetQuaDienTu": ["1", 1, 0, 2, "", None, "x", 1.5],
    "CapThucHien": ["1", [1, 2], [], "", None, 5, ["a", None]],
}
NON_OBJECTS: list[Any] = [None, 5, "x", [1, 2], 1.5, True, [], [{"MaHoSo": "A"}]]


def _random_text(rng: random.Random) -> str:
    alphabet = "aĐ09 \t\u00a0\u3000\u0301\u0323ệ|#-_/\x00\x85\u2028Zz"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def mutate(records: list[Any], rng: random.Random, rate: float) -> list[Any]:
    """A hostile copy of ``records``: some fields replaced, removed or added; duplicates (identical,
    conflicting, older, newer); non-objects; the order shuffled a little."""
    out: list[Any] = []
    for rec in records:
        if rng.random() >= rate:
            out.append(rec)
            continue
        if rng.random() < 0.05:
            out.append(rng.choice(NON_OBJECTS))
            continue
        r = dict(rec)
        for _ in range(rng.randint(1, 4)):
            field = rng.choice([*r, *NESTED, "Extra"]) if r else "Extra"
            roll = rng.random()
            if roll < 0.02:
                r[rng.choice([7, None, 2.5])] = rng.choice(SCALARS)  # a key that is not a string
            elif roll < 0.12:
                r.pop(field, None)
            elif field in NESTED and roll < 0.6:
                r[field] = rng.choice(NESTED[field])
            elif roll < 0.85:
                r[field] = rng.choice(SCALARS)
            else:
                r[field] = _random_text(rng)
        out.append(r)
        roll = rng.random()
        if roll < 0.15:
            out.append(dict(r))  # the same record twice
        elif roll < 0.3:
            pick = rng.choice(records)
            twin = dict(pick) if isinstance(pick, dict) else {}
            for k in ("MaHoSo", "Ma", "MaTTHC", "MaDonVi", "HieuLucTu"):
                if k in r:
                    twin[k] = r[k]
            twin["NgayCapNhat"] = rng.choice([r.get("NgayCapNhat"), "20240105080000", "20991231000000", None, ""])
            out.append(twin)
    for _ in range(len(out) // 50):
        a, b = rng.randrange(len(out)), rng.randrange(len(out))
        out[a], out[b] = out[b], out[a]
    return out


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref() -> ModuleType:
    mod = load_reference()
    if mod is None:
        pytest.skip(f"the reference implementation (git commit {REFERENCE[:8]}) is not available")
    return mod


@pytest.fixture(scope="module")
def dataset() -> Any:
    from simulator.dataset import generate

    return generate(seed=11, n_dossiers=20_000, start=date(2024, 1, 1), end=date(2024, 6, 30))


def _check(ref: ModuleType, entity: str, records: list[Any]) -> None:
    try:
        want = ref.normalize(entity, records, hash_key=KEY)
    except Exception as exc:  # noqa: BLE001 - the reference fails: so must the normaliser, alike
        with pytest.raises(type(exc)):
            normalize(entity, records, hash_key=KEY)
        return
    got = normalize(entity, records, hash_key=KEY)
    assert_same(got, want)


@pytest.mark.parametrize("entity", ["dossiers", "payments", "procedures", "units"])
def test_simulator_api_records_normalise_as_the_reference(ref, dataset, entity):
    records = api_records(dataset, entity)
    plain = dataset.records(entity)  # without the quirks (integers as integers, null timestamps as null)
    for a in range(0, len(records), 15_000):
        _check(ref, entity, records[a:a + 15_000])
    _check(ref, entity, plain[:5_000])
    _check(ref, entity, records[:1])
    _check(ref, entity, [])


@pytest.mark.parametrize("entity", ["dossiers", "payments", "procedures", "units"])
# make test: one seed of every entity at every mutation rate; make test-all: the other seeds too
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_hostile_mutations_normalise_as_the_reference(ref, dataset, entity, seed):
    rng = random.Random(f"{entity}-{seed}")
    records = api_records(dataset, entity)
    size = {"dossiers": 1_000, "payments": 1_000}.get(entity, len(records))
    start = rng.randrange(max(1, len(records) - size))
    sample = records[start:start + size]
    for rate in (0.002, 0.05, 0.5, 1.0):
        _check(ref, entity, mutate(sample, rng, rate))
    # one field hostile in every record (every column leaves its fast path)
    fields = sorted({k for r in sample[:50] if isinstance(r, dict) for k in r})
    for field in rng.sample(fields, min(6, len(fields))):
        recs = [dict(r) for r in sample[:200]]
        for r in recs:
            r[field] = rng.choice(SCALARS) if rng.random() < 0.5 else r.get(field)
        _check(ref, entity, recs)


def test_one_hostile_value_in_a_clean_column_parses_as_the_reference(ref, dataset):
    """Each hostile value alone in a clean column of each kind (a fast path sees exactly one odd
    value), and each hostile nested list alone among clean records."""
    from tasks.dossier_lists import derive_lists
    from tasks.field_types import parse_column

    old_types = sys.modules["_normref.field_types"]
    old_lists = sys.modules["_normref.dossier_lists"]
    recs = api_records(dataset, "dossiers")[:30]
    clean = {"str": [r["TenTTHC"] for r in recs], "i16": [r["TrangThaiHoSo"] for r in recs],
             "i64": [r["LoaiDoiTuong"] * 1000 for r in recs], "ts": [r["NgayTiepNhan"] for r in recs],
             "d8": [(r["NgayTiepNhan"] or "20240101")[:8] for r in recs], "f64": [1.5] * 30}
    for kind, column in clean.items():
        for value in [*SCALARS, *(v for vs in NESTED.values() for v in vs)]:
            for at in (17,):
                values = list(column)
                values[at] = value
                want, want_bad = old_types.parse_column(list(values), kind)
                got, got_bad = parse_column(list(values), kind)
                what = f"{kind} with {value!r:.40}"
                assert_same_frame(got.to_frame(), want.to_frame(), what)
                assert_same_frame(got_bad.to_frame(), want_bad.to_frame(), what + " (mask)")
    for field, values in NESTED.items():
        for value in values:
            mutated = [dict(r) for r in recs]
            mutated[5][field] = value
            if field.startswith("_"):
                for r in mutated[3:7]:
                    r.pop("TaiLieuNop", None)
                    r.pop("DanhSachGiayToKetQua", None)
            try:
                want = old_lists.derive_lists(mutated)
            except Exception as exc:  # noqa: BLE001 - the reference fails (a fee beyond 64 bits): alike
                with pytest.raises(type(exc)):
                    derive_lists(mutated)
                continue
            got = derive_lists(mutated)
            assert list(got.columns) == list(want.columns)
            for col in want.columns:
                pd.testing.assert_extension_array_equal(got.columns[col], want.columns[col], check_exact=True)
            assert_same_frame(got.rounds, want.rounds, f"rounds with {field} = {value!r:.40}")
            assert got.bad.tolist() == want.bad.tolist() and got.detail == want.detail


#: Clean columns of each kind mixing what the fast paths take (ints and numeric strings, empty
#: strings and None, the extreme years and a leap day), for one hostile value to be put among.
MIXED: dict[str, list[Any]] = {
    "str": ["a", None, "", "Đ x", "MaHoSo-1", "b"] * 5,
    "ts": ["20240105100000", None, "", "20240229235959", "19000101000000", "22001231235959"] * 5,
    "i16": [1, "2", None, "", 32767, "32767", "007", 0, -32767, "0"] * 3,
    "i64": [10**12, "77", None, "", 2**62, "4611686018427387904", -(2**62), "0000000000000000000012"] * 4,
    "d8": ["20240105", None, "", "20240229"] * 8,
    "f64": [1.5, None, 2, "3"] * 8,
}


@pytest.mark.parametrize("where", [pytest.param("first", marks=pytest.mark.slow), "middle",
                                   pytest.param("last", marks=pytest.mark.slow)])
def test_one_hostile_value_in_a_mixed_column_parses_as_the_reference(ref, where):
    """The vectorised fast paths (the Arrow column built from the values, the checks on its
    bytes, each distinct integer typed once) fall back to the reference's parsing whenever one
    value, anywhere in the column, is not theirs: a padded timestamp, a float or bool among
    ints, an int or bytes among strings, a str subclass. (make test: the value in the middle;
    make test-all: also first and last.)"""
    from tasks.field_types import parse_column

    old_types = sys.modules["_normref.field_types"]
    for kind, column in MIXED.items():
        for value in [*SCALARS, *(v for vs in NESTED.values() for v in vs)]:
            for at in ({"first": 0, "middle": 17, "last": len(column)}[where],):
                values = list(column)
                values.insert(at, value)
                what = f"{kind} with {value!r:.40} at {at}"
                try:
                    want, want_bad = old_types.parse_column(list(values), kind)
                except Exception as exc:  # noqa: BLE001 - the reference fails: alike
                    with pytest.raises(type(exc)):
                        parse_column(values, kind)
                    continue
                got, got_bad = parse_column(tuple(values), kind)  # the normaliser passes tuples
                assert_same_frame(got.to_frame(), want.to_frame(), what)
                assert_same_frame(got_bad.to_frame(), want_bad.to_frame(), what + " (mask)")


def test_every_day_of_the_accepted_years_parses_as_the_reference(ref):
    """Timestamps of every day from 1899-12-25 to 2201-01-05 (the fast path's calendar
    arithmetic; outside 1900..2200 the reference decides), at random times of day."""
    from tasks.field_types import parse_column

    rng = random.Random(5)
    days = np.arange(np.datetime64("1899-12-25"), np.datetime64("2201-01-06"))
    stamps = [d.item().strftime("%Y%m%d") + f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
              for d in days]
    inside = [t for t in stamps if "19000101" <= t[:8] <= "22001231"]
    old_types = sys.modules["_normref.field_types"]
    for values in (inside, ["23595959000000" if i % 2 else t for i, t in enumerate(inside[:5000])], stamps):
        want, want_bad = old_types.parse_column(list(values), "ts")
        got, got_bad = parse_column(values, "ts")
        assert_same_frame(got.to_frame(), want.to_frame(), "ts")
        assert_same_frame(got_bad.to_frame(), want_bad.to_frame(), "ts (mask)")


@pytest.mark.parametrize("key", [b"", b"k", KEY, b"k" * 32, b"k" * 63, b"k" * 64, b"k" * 65, bytes(range(256)) * 3])
def test_applicant_keys_are_the_reference_hmac_for_any_key_length(ref, key):
    """The applicant keys, hashed from precomputed HMAC pads, are the reference's (keys shorter
    than, as long as and longer than SHA-256's block)."""
    from tasks.normalize import _applicant_keys

    ids = ["213726072", "052174738677", "AB12", "", None, " 12 3", 123, "Đ12", "x" * 100, 2**70, 1.5, ["1"]]
    assert _applicant_keys(ids, key) == [ref.applicant_key(v, key) for v in ids]


def test_conflicting_ties_of_many_keys_normalise_as_the_reference(ref, dataset):
    """Several keys (non-ASCII, digits, case) each tied with different content, in no order,
    some tied without NgayCapNhat, beside identical copies and older versions: the same issues in
    the same order, the same kept rows, raw and versions."""
    recs = [r for r in api_records(dataset, "dossiers")[:400] if isinstance(r, dict)]
    out = []
    for i, key in enumerate(["Z", "a", "Đ-1", "A", "é", "10", "9", "ab", "a b", "Ω"]):
        a, b = dict(recs[2 * i]), dict(recs[2 * i + 1])
        a["MaHoSo"] = b["MaHoSo"] = a["Ma"] = b["Ma"] = key  # the key of a dossier, and of a payment
        stamp = [None, "20240105080000", ""][i % 3]
        a["NgayCapNhat"] = b["NgayCapNhat"] = stamp
        older = [dict(recs[2 * i], MaHoSo=key, Ma=key, NgayCapNhat="19990101000000")] if stamp else []  # a null is older
        out += [b, *older, a, dict(a)]
    mixed = out + recs[40:]
    random.Random(2).shuffle(mixed)
    for records in (out, mixed):
        for entity in ("dossiers", "payments"):
            _check(ref, entity, records)


def test_the_collector_is_paused_only_while_normalising():
    """normalize pauses the cyclic garbage collector (its records are alive throughout) and gives
    it back as it found it, enabled or not, also when it fails."""
    import gc

    recs = [{"MaHoSo": "A", "TrangThaiHoSo": 1, "NgayCapNhat": "20240105100000"}]
    assert gc.isenabled()
    normalize("dossiers", recs, hash_key=KEY)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        normalize("no-such-entity", recs, hash_key=KEY)
    assert gc.isenabled()
    gc.disable()
    try:
        normalize("dossiers", recs, hash_key=KEY)
        assert not gc.isenabled()
    finally:
        gc.enable()

"""API-shaped records -> typed frames shaped like the warehouse tables.

Plain, pure functions (no I/O but reading the entity's suite). One entry point, :func:`normalize`,
used for API pages and for parsed Excel/CSV files alike, so both paths give the same cleaned rows.

What it does, per batch of records of one entity (the entity's fields, keys and required fields:
:mod:`tasks.field_types` and the registry, :mod:`tasks.entities`):

- parses every field by its declared kind (timestamps ``yyyyMMddHHmmss``, integers that may be
  numeric strings, ``yyyyMMdd`` dates); a value that is present but unparseable becomes a
  **parse issue** for that row (rule ``parse_<field>``), never a silent null;
- drops older duplicates of a key within the batch (latest ``NgayCapNhat`` wins, ties: last seen;
  a tie between different contents is an issue of the suite's key-unique rule);
- derives the dossier flags and supplement rounds from the nested lists
  (:mod:`tasks.dossier_lists`); the rounds of the kept version of each dossier become
  :attr:`Normalized.supplements` (``core.dossier_supplements``);
- replaces personal data: ``SoGiayToChuHoSo`` becomes ``applicant_key`` (HMAC-SHA256 with the
  configured key); ``ChuHoSo`` and ``SoDienThoai`` never reach the core frame;
- builds the raw frame (canonical JSON of each record as read, with its hash).

The issues it raises are rules of the entity's suite (``expectations/<entity>.json``), which
gives their names and severities (:func:`issue_rules`): the ``dvc_parse`` rules (values that
cannot be typed, required fields missing, malformed nested lists) and the key-unique rule. The
quality gate (:mod:`tasks.quality`) skips the ``dvc_parse`` rules: the normaliser evaluates them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from tasks.dossier_lists import NESTED_LISTS, derive_lists, kept_rounds
from tasks.entities import Entity
from tasks.entities import entity as entity_of
from tasks.field_types import FIELDS, parse_column, string_array
from tasks.resources import gc_paused
from tasks.settings import hash_key_id
from tasks.suites import ISSUE_COLUMNS, PARSE_TYPE, Rule, load_suite


@dataclass
class Normalized:
    """The result of normalising one batch of one entity."""

    entity: str
    core: pd.DataFrame  # one row per key (latest version), core.<entity> columns without lineage
    raw: pd.DataFrame  # one row per distinct record read: record_key, record_hash, ngay_cap_nhat, record
    issues: pd.DataFrame  # the normaliser's issues: record_key, rule, severity, detail
    rows_received: int = 0
    rows_duplicate: int = 0
    #: record_key -> canonical JSON text of the kept version (a read-only mapping)
    raw_by_key: Mapping[str, str] = field(default_factory=dict)
    #: dossiers only: every well-formed version read (before dedupe): ma_ho_so, ngay_cap_nhat, trang_thai
    versions: pd.DataFrame | None = None
    #: dossiers only: one row per supplement round (DanhSachHoSoBoSung) of the kept version of each
    #: key: ``SUPPLEMENT_COLUMNS`` (``lan`` = 1-based position in the list). No rows for a record
    #: without the list (a file export); rows of quarantined keys included (the loader drops them).
    supplements: pd.DataFrame | None = None

    @property
    def rows_read(self) -> int:
        return self.rows_received - self.rows_duplicate


# ----------------------------------------------------------------------------------------------
# the issues' rules, from the suite
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IssueRule:
    """The name (``dq.quarantine.rule``) and severity of one kind of issue the normaliser raises."""

    name: str
    severity: str


@dataclass(frozen=True)
class IssueRules:
    """Every rule the normaliser may raise for one entity, as its suite declares them."""

    parse: dict[str, IssueRule]  # core column -> its parse rule (``parse_<column>``)
    required: dict[str, IssueRule]  # core column -> its required rule (``required_<column>``)
    nested_lists: IssueRule | None  # dossiers only: malformed nested lists
    key_unique: IssueRule  # a key tied with different content


#: ``check`` kwarg of a ``dvc_parse`` rule -> the kwarg listing what it covers.
_PARSE_CHECKS = {"typed": "columns", "required": "columns", "nested_lists": "fields"}


def issue_rules(entity: str, expectations_dir: Path | None = None) -> IssueRules:
    """The rules of the issues :func:`normalize` raises for ``entity``, read from its suite.

    The suite declares one ``dvc_parse`` expectation per check (``kwargs.check``): ``typed``
    (``kwargs.columns``: every column the normaliser types), ``required`` (``kwargs.columns``: the
    registry's required fields) and, for dossiers, ``nested_lists`` (``kwargs.fields``). Each gives
    the severity (``meta.severity``) and the name its issues are reported under
    (``kwargs.issue_rule``, ``{column}`` standing for the column). A tie between two versions of a
    key is reported under the suite's rule named by the registry (``Entity.key_unique_rule``).

    Raises ValueError, naming the suite and what is missing, when a declaration is absent or does
    not cover exactly what the normaliser checks: no issue is ever raised under an undeclared rule.
    """
    ent = entity_of(entity)
    suite = load_suite(entity, expectations_dir)
    where = f"expectations/{entity}.json"
    declared: dict[str, Rule] = {}
    for r in suite.rules:
        if not r.is_parse:
            continue
        check = r.kwargs.get("check")
        if check not in _PARSE_CHECKS:
            raise ValueError(f"{where}: {PARSE_TYPE} rule {r.rule} has check {check!r}; "
                             f"expected one of {', '.join(_PARSE_CHECKS)}")
        if check in declared:
            raise ValueError(f"{where}: {PARSE_TYPE} rules {declared[check].rule} and {r.rule} both "
                             f"declare check {check!r}")
        declared[check] = r
    api_to_col = {api: col for col, api, _ in FIELDS[entity]}
    expected = {"typed": [col for col, _, _ in FIELDS[entity]],
                "required": [api_to_col[api] for api in ent.required],
                "nested_lists": list(NESTED_LISTS) if entity == "dossiers" else []}

    def rules_of(check: str) -> dict[str, IssueRule]:
        r = declared.get(check)
        if r is None:
            if not expected[check]:
                return {}
            raise ValueError(
                f"{where} declares no {PARSE_TYPE} rule with check {check!r} (covering "
                f"{', '.join(expected[check])}): the normaliser takes the name and severity of these "
                "issues from the suite")
        covered = list(r.kwargs.get(_PARSE_CHECKS[check]) or ())
        if sorted(covered) != sorted(expected[check]):
            missing = sorted(set(expected[check]) - set(covered))
            unknown = sorted(set(covered) - set(expected[check]))
            raise ValueError(f"{where}: {PARSE_TYPE} rule {r.rule} covers {covered}, the normaliser "
                             f"checks {expected[check]} (missing: {missing}, not checked: {unknown})")
        template = r.kwargs.get("issue_rule")
        out = {}
        for item in covered:
            name = template.replace("{column}", item) if isinstance(template, str) else ""
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{where}: {PARSE_TYPE} rule {r.rule} needs kwargs.issue_rule, a "
                                 f"snake_case name (may hold {{column}}); it gives {name!r}")
            out[item] = IssueRule(name, r.severity)
        return out

    parse, required, nested = rules_of("typed"), rules_of("required"), rules_of("nested_lists")
    unique = suite.rule(ent.key_unique_rule)
    if unique is None:
        raise ValueError(f"{where} has no rule {ent.key_unique_rule}, the rule of a key that arrives twice "
                         "in one batch with different content (tasks/entities.py names it)")
    return IssueRules(parse=parse, required=required, nested_lists=next(iter(nested.values()), None),
                      key_unique=IssueRule(unique.rule, unique.severity))


def _issues(keys: pd.Series, mask: pd.Series, rule: IssueRule, detail: pd.Series | str) -> pd.DataFrame:
    idx = mask[mask].index
    if len(idx) == 0:
        return pd.DataFrame(columns=[*ISSUE_COLUMNS, "_pos"])
    det = detail[idx].values if isinstance(detail, pd.Series) else detail
    return pd.DataFrame(
        {"record_key": keys[idx].values, "rule": rule.name, "severity": rule.severity, "detail": det, "_pos": idx}
    )


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def normalize(entity: str, records: Sequence[dict], *, hash_key: bytes,
              expectations_dir: Path | None = None) -> Normalized:
    """Normalise one batch of records of ``entity``. See the module docstring; ``expectations_dir``
    holds the suites (default: the project's ``expectations/``)."""
    with gc_paused():  # a batch's records are alive throughout: no collections walking them
        return _normalize(entity, records, hash_key=hash_key, expectations_dir=expectations_dir)


def _normalize(entity: str, records: Sequence[dict], *, hash_key: bytes,
               expectations_dir: Path | None) -> Normalized:
    ent = entity_of(entity)
    rules = issue_rules(entity, expectations_dir)
    records = [r if isinstance(r, dict) else {"_not_an_object": r} for r in records]
    n = len(records)
    spec = FIELDS[entity]
    cols: dict[str, pd.Series] = {}
    bad: dict[str, pd.Series] = {}
    extra = ("SoGiayToChuHoSo",) if entity == "dossiers" else ()
    values = _field_values(records, [*(api for _, api, _ in spec), *extra])
    for col, api, kind in spec:
        cols[col], bad[col] = parse_column(values[api], kind)
    core = pd.DataFrame(cols)
    core.index = pd.RangeIndex(n)

    texts, hashes = _record_texts(records)
    keys = _key_series(ent, core)
    missing_key = keys.isna() | keys.eq("") | keys.str.startswith("|") | keys.str.endswith("|")
    if missing_key.any():
        # a record without its key is named by its content: the same record read again (next
        # night, at another position) has the same name, so its quarantine row is not repeated
        keys = keys.where(~missing_key, pd.Series([f"#{h[:16]}" for h in hashes], dtype="string"))
    issue_frames: list[pd.DataFrame] = []
    for col, api, kind in spec:
        if bad[col].any():
            raw_vals = pd.Series([repr(r.get(api))[:80] for r in records])
            issue_frames.append(
                _issues(keys, bad[col], rules.parse[col], f"{api} = " + raw_vals + f" is not a valid {kind}")
            )
    api_to_col = {api: col for col, api, _ in spec}
    for api in ent.required:
        col = api_to_col[api]
        missing = core[col].isna() & ~bad[col]
        if missing.any():
            issue_frames.append(_issues(keys, missing, rules.required[col], f"{api} is missing"))

    rounds: pd.DataFrame | None = None
    if entity == "dossiers":
        hk = _applicant_keys(values["SoGiayToChuHoSo"], hash_key)
        lists = derive_lists(records)
        core["applicant_key"] = string_array(hk)
        for col, array in lists.columns.items():
            core[col] = array
        # beside each hash, the id of its key: a key rotation shows, and rows left to re-hash can be found
        key_id = hash_key_id(hash_key)
        core["applicant_key_id"] = string_array([None if h is None else key_id for h in hk] if None in hk
                                                else [key_id] * n)
        rounds = lists.rounds
        if lists.bad.any() and rules.nested_lists is not None:
            mask = pd.Series(lists.bad)
            issue_frames.append(_issues(keys, mask, rules.nested_lists, pd.Series(lists.detail)))
    elif entity == "procedures":
        core["cap_thuc_hien"] = pd.Series([_levels(r.get("CapThucHien")) for r in records], dtype="string")

    issues = (
        pd.concat(issue_frames, ignore_index=True)
        if issue_frames
        else pd.DataFrame(columns=[*ISSUE_COLUMNS, "_pos"])
    )

    # raw: every distinct record read (parse failures included: raw is "as extracted")
    upd = values["NgayCapNhat"] if "NgayCapNhat" in values else [r.get("NgayCapNhat") for r in records]
    multi = keys.duplicated(keep=False).to_numpy()  # keys read more than once (usually none)
    raw = pd.DataFrame(
        {
            "record_key": keys.values,
            "record_hash": hashes,
            "ngay_cap_nhat": string_array(upd if set(map(type, upd)) <= {str, type(None)}
                                          else [v if v is None or type(v) is str else str(v) for v in upd]),
            "record": pd.Series(pd.arrays.ArrowStringArray(texts)),
        }
    )

    # latest version per key wins; ties: the last one read
    core["_record_key"] = keys.values
    core["_order"] = np.arange(n)
    versions = None
    if entity == "dossiers":
        critical = set(issues.loc[issues["severity"] == "critical", "_pos"])
        clean = ~core["_order"].isin(critical) & core["ngay_cap_nhat"].notna() & core["trang_thai"].notna()
        versions = core.loc[clean, ["ma_ho_so", "ngay_cap_nhat", "trang_thai"]]
        versions = _drop_repeats(versions, versions["ma_ho_so"].duplicated(keep=False).to_numpy(),
                                 ["ma_ho_so", "ngay_cap_nhat"], keep="last")
    kept_pos, n_dup = _kept_positions(core, multi)
    kept = core if n_dup == 0 else core.take(kept_pos)
    supplements = kept_rounds(rounds, core, kept["_order"]) if rounds is not None else None
    ties = _conflicting_ties(ent, rules.key_unique, keys, core, raw["record_hash"], multi)
    raw, raw_row = _distinct_versions(raw, multi)
    kept_rows = raw_row[kept["_order"].to_numpy()]
    raw_by_key = RecordTexts(dict(zip(kept["_record_key"].tolist(), kept_rows.tolist(), strict=True)), raw, kept_rows)
    # issues only for the kept version of each key (an older, broken copy is superseded)
    issues = issues[issues["_pos"].isin(set(kept["_order"]))].drop(columns="_pos").reset_index(drop=True)
    if len(ties):
        issues = pd.concat([issues, ties], ignore_index=True)
    core = kept.drop(columns=["_order"]).rename(columns={"_record_key": "record_key"})
    core = core.reset_index(drop=True)
    return Normalized(entity, core, raw, issues, rows_received=n, rows_duplicate=n_dup, raw_by_key=raw_by_key,
                      versions=versions, supplements=supplements)


def _key_series(ent: Entity, core: pd.DataFrame) -> pd.Series:
    """The record key of every row: the core key, its columns joined by ``|`` (dates as
    ``yyyyMMdd``) when it has several; <NA> or an empty part where the record lacks it."""
    if len(ent.core_key) == 1:
        return core[ent.core_key[0]].astype("string")
    parts = []
    for col in ent.core_key:
        s = core[col]
        parts.append((s.dt.strftime("%Y%m%d") if pd.api.types.is_datetime64_any_dtype(s) else s).fillna(""))
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key.astype("string")


def _field_values(records: list[dict], apis: list[str]) -> dict[str, Sequence[Any]]:
    """The value of each field ``apis`` names (None where absent) in every record, read in one pass
    over plain dicts that hold every field (else field by field, with ``dict.get``)."""
    if not records:
        return {api: [] for api in apis}
    if len(apis) > 1 and set(map(type, records)) == {dict}:
        try:
            return dict(zip(apis, zip(*map(itemgetter(*apis), records), strict=True), strict=True))
        except KeyError:
            pass
    return {api: [r.get(api) for r in records] for api in apis}


def _kept_positions(core: pd.DataFrame, multi: np.ndarray) -> tuple[np.ndarray, int]:
    """Positions of the version kept of each key (its latest ``ngay_cap_nhat``, null first; ties:
    the last read), in reading order, and the number of older versions dropped."""
    n = len(core)
    if not multi.any():
        return np.arange(n), 0
    pos = np.flatnonzero(multi)  # a key read once is kept
    if "ngay_cap_nhat" in core:  # NaT is the smallest datetime64 integer: first, as na_position="first"
        stamp = core["ngay_cap_nhat"].to_numpy(dtype="datetime64[us]").view(np.int64)[pos]
        pos = pos[np.lexsort((pos, stamp))]
    dup = core["_record_key"].take(pos).duplicated(keep="last").to_numpy()
    keep = np.ones(n, dtype=bool)
    keep[pos[dup]] = False
    return np.flatnonzero(keep), int(dup.sum())


def _kept_rows(frame: pd.DataFrame, among: np.ndarray, columns: list[str], keep: str) -> np.ndarray | None:
    """The rows ``frame.drop_duplicates(columns, keep=keep)`` keeps, as a mask, looking for repeats
    only among the rows ``among`` marks (a row outside them repeats no other); None when none repeats."""
    at = np.flatnonzero(among)
    if len(at):
        dup = frame[columns].iloc[at].duplicated(keep=keep).to_numpy()  # not the other columns' rows
        if dup.any():
            kept = np.ones(len(frame), dtype=bool)
            kept[at[dup]] = False
            return kept
    return None


def _drop_repeats(frame: pd.DataFrame, among: np.ndarray, columns: list[str], keep: str) -> pd.DataFrame:
    """``frame.drop_duplicates(columns, keep=keep)`` with a RangeIndex (:func:`_kept_rows`)."""
    kept = _kept_rows(frame, among, columns, keep)
    return (frame if kept is None else frame[kept]).reset_index(drop=True)


def _distinct_versions(raw: pd.DataFrame, multi: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """``raw`` without the repeats of a version (record_key and record_hash) read earlier in the
    batch, and for each record read, the row of the result that holds its text (a repeat's: its
    first reading's, the same text). ``multi``: the keys read more than once (only they repeat)."""
    kept = _kept_rows(raw, multi, ["record_key", "record_hash"], keep="first")
    if kept is None:
        return raw.reset_index(drop=True), np.arange(len(raw))
    row = np.cumsum(kept) - 1
    at = np.flatnonzero(multi)
    first: dict[tuple[str, str], int] = {}
    versions = zip(raw["record_key"].take(at), raw["record_hash"].take(at), strict=True)
    for pos, version in zip(at.tolist(), versions, strict=True):
        row[pos] = row[first.setdefault(version, pos)]
    return raw[kept].reset_index(drop=True), row


def _conflicting_ties(ent: Entity, rule: IssueRule, keys: pd.Series, core: pd.DataFrame,
                      hashes: pd.Series, multi: np.ndarray) -> pd.DataFrame:
    """Issues of the suite's key-unique ``rule`` for the keys whose latest version is tied with a
    different record: the batch cannot tell which one is current, so (critical) the row is
    quarantined instead of the last one winning. ``multi``: the keys read more than once (only
    they can conflict)."""
    if not multi.any():
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    k = keys[multi].tolist()
    h = hashes[multi].tolist()
    # NaT (the smallest datetime64 integer) before any time, equal to another NaT
    t = (core["ngay_cap_nhat"].to_numpy(dtype="datetime64[us]").view(np.int64)[multi].tolist()
         if "ngay_cap_nhat" in core else [0] * len(k))
    latest: dict[str, int] = {}
    for key, stamp in zip(k, t, strict=True):
        if key not in latest or stamp > latest[key]:
            latest[key] = stamp
    contents: dict[str, set[str]] = {}
    for key, stamp, digest in zip(k, t, h, strict=True):
        if stamp == latest[key]:
            contents.setdefault(key, set()).add(digest)
    bad = sorted((key, len(c)) for key, c in contents.items() if len(c) > 1)
    key_fields = "/".join(ent.key)
    same = " with the same NgayCapNhat" if "ngay_cap_nhat" in core else ""
    return pd.DataFrame({
        "record_key": pd.Series([key for key, _ in bad], dtype="string"), "rule": rule.name,
        "severity": rule.severity,
        "detail": [f"{key_fields} = {key} arrived {n} times{same} and with different content: "
                   "which one is current cannot be told" for key, n in bad],
    }, columns=ISSUE_COLUMNS)


class RecordTexts(Mapping[str, str]):
    """record_key -> canonical JSON text, read from the ``record`` column of the batch's raw frame
    on demand (only the quarantined rows' texts are ever needed; a dict of every text as a Python
    string would hold a second copy of the chunk's JSON). It holds the raw frame itself, the one
    :attr:`Normalized.raw` holds, so a pickled :class:`Normalized` (the normaliser's worker's
    answer) carries the texts once."""

    def __init__(self, positions: dict[str, int], raw: pd.DataFrame, rows: np.ndarray | None = None) -> None:
        self._pos, self._raw = positions, raw
        self._rows = rows  # the raw row of each core row's version, in the core frame's order

    def __getitem__(self, key: str) -> str:
        return self._raw["record"].iat[self._pos[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pos)

    def hashes(self, keys: Sequence[str], at: np.ndarray | None = None) -> np.ndarray:
        """The record hash (``raw.record_hash``) of each key's kept version; ``at``: the keys'
        positions in the core frame, when known (no lookup by key then)."""
        rows = self._rows[at] if at is not None and self._rows is not None else [self._pos[k] for k in keys]
        return self._raw["record_hash"].to_numpy(dtype=object)[rows]

    def __len__(self) -> int:
        return len(self._pos)


_TEXT_BLOCK = 512  # records per block of orjson buffers held at once


def _record_texts(records: Sequence[dict]) -> tuple[pa.ChunkedArray, list[str]]:
    """Canonical JSON of every record as one Arrow string column, and the SHA-256 of each. Built
    block by block: orjson's output buffers are ~16 KB each whatever the record's size, so a
    batch's worth of them held at once would take far more memory than the texts themselves."""
    sha = hashlib.sha256
    chunks: list[pa.Array] = []
    hashes: list[str] = []
    for a in range(0, len(records), _TEXT_BLOCK):
        block = [canonical_json(r) for r in records[a : a + _TEXT_BLOCK]]
        hashes.extend([sha(j).hexdigest() for j in block])
        chunks.append(pa.array(block, pa.large_binary()).view(pa.large_string()))  # orjson writes UTF-8
    return pa.chunked_array(chunks, pa.large_string()), hashes


def canonical_json(rec: dict) -> bytes:
    try:
        return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:  # an integer beyond 64 bits (valid JSON, orjson refuses it): keep its digits as text
        return orjson.dumps(_wide_ints_as_text(rec), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def _wide_ints_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _wide_ints_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_ints_as_text(v) for v in value]
    return value


def applicant_key(id_number: Any, key: bytes) -> str | None:
    """Keyed hash of an applicant ID number (spaces removed); None when there is no ID."""
    if id_number is None:
        return None
    text = "".join(str(id_number).split())
    if not text:
        return None
    return hmac.digest(key, text.encode("utf-8"), "sha256").hex()


def _applicant_keys(ids: Sequence[Any], key: bytes) -> list[str | None]:
    """:func:`applicant_key` of every ID: a plain ASCII alphanumeric ID hashed from SHA-256 states
    holding the HMAC key's pads (RFC 2104: what HMAC computes, without setting the key up per ID)."""
    block_key = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
    inner_copy = hashlib.sha256(block_key.translate(_IPAD)).copy
    outer_copy = hashlib.sha256(block_key.translate(_OPAD)).copy
    out: list[str | None] = []
    append = out.append
    for v in ids:
        if type(v) is str and v and v.isalnum() and v.isascii():
            inner = inner_copy()
            inner.update(v.encode())
            outer = outer_copy()
            outer.update(inner.digest())
            append(outer.hexdigest())
        else:
            append(applicant_key(v, key))
    return out


_BLOCK = 64  # SHA-256's block size, the length of an HMAC key's pads
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _levels(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)

"""Planted records: raw records served verbatim by the simulator, next to its generated data.

The data-quality gate is proven by planting bad (and corrected) records into the source and
watching where they land. A planted record is any JSON value (normally an object with the API's
field names, but a broken source may send anything); it is served exactly as given on the pages
of its entity, ordered with the generated records by ``NgayCapNhat``:

- its position is its ``NgayCapNhat`` when that is a valid ``yyyyMMddHHmmss`` timestamp, else the
  ``at`` time given when planting (default: the simulator's current time), so a record with a
  missing or malformed timestamp still shows up in the current incremental window;
- after the generated records of the same second, in planting order among planted ones;
- catalogues (procedures, units) have no ``NgayCapNhat``: planted records come after the
  generated ones, in planting order.

    inject(ds, "dossiers", [{"MaHoSo": "X-1", "TrangThaiHoSo": 11, ...}])
    POST /_sim/inject            {"dossiers": [...], "payments": [...]}   (adds)
    POST /_sim/inject?replace=1  {"procedures": [...]}   (replaces the planted procedures)

Nothing here changes the generated data: ``Dataset.count`` and the generated pages are as before;
only the pages of an entity with planted records take the (slower) merging path below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from simulator.state import ENTITIES
from simulator.workcal import to_ts

if TYPE_CHECKING:
    from simulator.dataset import Dataset

VERSIONED = ("dossiers", "payments")
_ATTR = "_planted"


@dataclass
class Planted:
    """The planted records of one entity, sorted by (position timestamp, planting order)."""

    records: list[Any] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)

    def add(self, record: Any, ts: int) -> None:
        # insert after every planted record with ts <= this one (stable)
        i = int(np.searchsorted(np.asarray(self.ts, dtype=np.int64), ts, "right")) if self.ts else 0
        self.records.insert(i, record)
        self.ts.insert(i, ts)


def _store(ds: Dataset) -> dict[str, Planted]:
    store = getattr(ds, _ATTR, None)
    if store is None:
        store = {}
        setattr(ds, _ATTR, store)
    return store


def position_ts(record: Any, default: int) -> int:
    """Simulator time at which ``record`` sits in the NgayCapNhat order."""
    value = record.get("NgayCapNhat") if isinstance(record, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) == 14 and value.isdigit():
        try:
            return to_ts(datetime.strptime(value, "%Y%m%d%H%M%S"))
        except ValueError:
            return default
    return default


def inject(ds: Dataset, entity: str, records: list[Any], *, at: datetime | None = None,
           replace: bool = False) -> int:
    """Plant ``records`` (served verbatim) into ``entity``'s pages; returns the planted count.

    ``at``: where records without a valid ``NgayCapNhat`` sit (default: the dataset's now).
    ``replace``: drop the entity's earlier planted records first.
    """
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
    if not isinstance(records, list):
        raise ValueError(f"{entity}: planted records must be a JSON list")
    store = _store(ds)
    if replace or entity not in store:
        store[entity] = Planted()
    default = to_ts(at) if at is not None else ds.now_ts
    for rec in records:
        orjson.dumps(rec)  # must be servable as JSON (raises TypeError otherwise)
        store[entity].add(rec, position_ts(rec, default) if entity in VERSIONED else 0)
    ds.version += 1  # invalidates the server's page cache
    return len(store[entity].records)


def planted(ds: Dataset, entity: str) -> list[Any]:
    """The records planted into ``entity`` (in serving order)."""
    p = _store(ds).get(entity)
    return list(p.records) if p else []


def has_planted(ds: Dataset, entity: str) -> bool:
    p = getattr(ds, _ATTR, {}).get(entity)
    return bool(p and p.records)


def inject_json(ds: Dataset, body: Any, *, replace: bool = False) -> dict[str, int]:
    """Plant from a request body ``{"<entity>": [records...], ...}``; returns planted counts.

    Raises ValueError for a body that is not such an object (nothing is planted then)."""
    if not isinstance(body, dict) or not body:
        raise ValueError('the body must be a JSON object {"<entity>": [records...]}')
    bad = sorted(set(body) - set(ENTITIES))
    if bad:
        raise ValueError(f"unknown entities {bad}; expected some of {list(ENTITIES)}")
    for entity, records in body.items():
        if not isinstance(records, list):
            raise ValueError(f"{entity}: planted records must be a JSON list")
    return {entity: inject(ds, entity, records, replace=replace) for entity, records in body.items()}


def render_page(ds: Dataset, entity: str, frm: int | None, to: int | None, page: int, size: int
                ) -> tuple[bytes, int, int]:
    """One page of ``entity`` with its planted records merged in: (body, lo, hi), where lo/hi
    are the generated records' window positions (as the server's own path returns them)."""
    p = _store(ds)[entity]
    if entity in VERSIONED:
        lo, hi = ds.window(entity, frm, to)
        base_upd = ds.ordered(entity)[1][lo:hi]
        pts = np.asarray(p.ts, dtype=np.int64)
        a_p = 0 if frm is None else int(np.searchsorted(pts, frm, "left"))
        b_p = len(pts) if to is None else int(np.searchsorted(pts, to, "left"))
        b_p = max(a_p, b_p)
        recs = p.records[a_p:b_p]
        # merged position of each planted record: generated records at or before its second come first
        merged = np.searchsorted(base_upd, pts[a_p:b_p], "right") + np.arange(len(recs))
    else:
        lo, hi = 0, ds.count(entity)
        recs = list(p.records)
        merged = (hi - lo) + np.arange(len(recs))
    total = (hi - lo) + len(recs)
    a = min(total, (page - 1) * size)
    b = min(total, a + size)
    parts: list[bytes] = []
    base_pos = a - int(np.count_nonzero(merged < a))  # generated records before the page
    cursor = a
    order = ds.ordered(entity)[0] if entity in VERSIONED else None
    for j in np.flatnonzero((merged >= a) & (merged < b)).tolist():
        n_base = int(merged[j]) - cursor
        parts.append(_base_json(ds, entity, order, lo + base_pos, n_base))
        base_pos += n_base
        parts.append(orjson.dumps(recs[j]))
        cursor = int(merged[j]) + 1
    parts.append(_base_json(ds, entity, order, lo + base_pos, b - cursor))
    data = b"[" + b",".join(x for x in parts if x) + b"]"
    body = b'{"data":' + data + f',"page":{page},"page_size":{size},"total":{total}}}'.encode()
    return body, lo, hi


def _base_json(ds: Dataset, entity: str, order: np.ndarray | None, start: int, n: int) -> bytes:
    """The generated records at window positions [start, start + n), as JSON array items (no brackets)."""
    if n <= 0:
        return b""
    idx = order[start:start + n] if order is not None else np.arange(start, start + n)
    return ds.render_json(entity, idx)[1:-1]

"""What an extraction's loads know of the keys a core table holds: a chunk's certainly new rows
are then appended (DuckDB ``INSERT``, PostgreSQL ``COPY`` straight into the table), its exact
re-reads take no statement at all, and only the rest takes the upsert of :func:`tasks.load._upsert`.

DuckDB's core tables have no key index (migration 0009), so that upsert's update and anti-join read
every key of the table for each chunk, however few rows they stage, for the core table, the
versions and the supplements: the load grew faster than the table (``bench/README.md``).
PostgreSQL stages the rows in a temporary table and probes the key index for each (``INSERT .. ON
CONFLICT``): twice the writing of a plain ``COPY``. A first load's
chunks hold new keys, and the few rows that paging reads again at a page boundary (the same
version, already loaded by the chunk before).

:class:`KnownKeys` holds, for one (warehouse, source, entity):

- the hash (DuckDB's ``hash()`` of the key, in a private in-memory DuckDB on PostgreSQL) of every
  key the table holds: read from the table at the extraction's second load (an extraction of one
  chunk, a nightly's, reads none: on PostgreSQL the keys cross the wire; the first load takes the
  long way), then kept up to date as its loads commit. A key whose hash is not there is
  certainly not in the table (a hash shared by two keys only sends a row the long way); 8 bytes a
  key, in sorted runs merged as they grow;
- the record hash of the rows the last two loads inserted: a row read again with the same hash is
  the table's row already (its versions and supplement rounds too);
- on PostgreSQL, the hash of every record key ``raw.<entity>`` holds (quarantined keys too): a
  version whose key is not there is new to the raw table, and only the others are looked up
  (:func:`tasks.load._append_raw`; a hash join over the raw table for each chunk otherwise).
  DuckDB's raw layer is the landed files: no lookup to spare.

It is right only if every write of the entity's core rows goes through it while the extraction
runs. Other processes wait: a DuckDB file has one writer process, and runs hold the warehouse's
writer lock (a PostgreSQL advisory lock), whose key indexes would refuse a duplicate anyway. In the
process, loads take turns (``warehouse.local_write_lock``), and :func:`tracking` makes a second
extraction of the same entity, or a load that is not the extraction's (:func:`note_load`), switch
every tracker of that entity off for the rest of its extraction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy.engine import Connection, Engine

from tasks.entities import REGISTRY
from tasks.warehouse import raw_driver_connection

#: A row's way into the table (:attr:`Split.way`).
NEW, SAME, REST = 0, 1, 2


@dataclass
class Split:
    """The ways of one chunk's rows (its core frame, in order) into the table."""

    way: np.ndarray  # NEW, SAME or REST per row
    hashes: np.ndarray  # the key hash of each row
    keys: np.ndarray  # record keys (object)
    record_hashes: np.ndarray | None  # each row's record hash, or None (no exact re-reads then)

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The way of each row of another frame of the chunk, given its key's position in the core
        frame (``Index.get_indexer``); a key the core frame lacks (-1) takes the long way."""
        return np.where(positions >= 0, self.way[np.maximum(positions, 0)], REST)


class HashSet:
    """A set of 64-bit hashes in sorted runs (8 bytes a hash): a run per batch added, merged while
    the newest is at least half the one before, so the runs stay few and merging costs
    O(n log n) in all."""

    def __init__(self, hashes: np.ndarray | None = None) -> None:
        self._runs: list[np.ndarray] = [np.unique(hashes)] if hashes is not None and len(hashes) else []

    def holds(self, hashes: np.ndarray) -> np.ndarray:
        order = np.argsort(hashes)  # sorted needles: the binary searches walk each run in order
        needles = hashes[order]
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, needles), len(run) - 1)
            found |= run[at] == needles
        out = np.empty(len(hashes), dtype=bool)
        out[order] = found
        return out

    def add(self, hashes: np.ndarray, *, new: bool = False) -> None:
        """Add ``hashes``; those already held are not added twice (``new``: none is held)."""
        hashes = np.unique(hashes)
        if not new:
            hashes = hashes[~self.holds(hashes)]
        if not len(hashes):
            return
        self._runs.append(hashes)
        while len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            last = self._runs.pop()
            merged = np.concatenate([self._runs.pop(), last])
            merged.sort(kind="stable")  # two sorted runs: a timsort merges them in one pass
            self._runs.append(merged)

    @property
    def runs(self) -> list[np.ndarray]:
        return self._runs

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)


class KnownKeys:
    """See the module docstring."""

    def __init__(self, entity: str, source: str, skip: int = 1) -> None:
        self.entity, self.source = entity, source
        self.usable = True
        self._skip = skip  # loads left to go the long way before the tracker reads the tables' keys
        self._keys: HashSet | None = None  # core.<entity>'s keys, read at the first split
        self._raw_keys: HashSet | None = None  # PostgreSQL: raw.<entity>'s record keys, read at the first raw split
        self._recent: list[dict[str, str]] = [{}, {}]  # record key -> record hash, of the last two loads
        self._pending: Split | None = None
        self._pending_raw: np.ndarray | None = None  # the record key hashes of the load's raw versions
        self._hasher: duckdb.DuckDBPyConnection | None = None  # hashes the chunks' keys

    # -- the split, inside a load's transaction ---------------------------------------------
    def split(self, conn: Connection, frame: pd.DataFrame, record_hashes: np.ndarray | None) -> Split | None:
        """The way of each row of ``frame`` (the chunk's rows for ``core.<entity>``, distinct keys,
        ``record_key`` among its columns); None when this tracker is off (then every row takes the
        long way). Kept as pending until :meth:`committed`."""
        self._pending = None
        if not self.usable or self._skip > 0:
            return None
        (key,) = REGISTRY[self.entity].core_key  # the incremental entities' keys are one text column
        if self._keys is None:
            self._keys = HashSet(self._held(conn, f"core.{self.entity}", key))
        hashes = self._hash(frame[key])
        keys = frame["record_key"].to_numpy(dtype=object)
        way = np.where(self._keys.holds(hashes), REST, NEW)
        if record_hashes is not None and (way == REST).any():
            recent_old, recent_new = self._recent
            for i in np.flatnonzero(way == REST):
                k = keys[i]
                if recent_new.get(k, recent_old.get(k)) == record_hashes[i]:
                    way[i] = SAME
        self._pending = Split(way, hashes, keys, record_hashes)
        return self._pending

    def raw_split(self, conn: Connection, raw: pd.DataFrame) -> np.ndarray | None:
        """PostgreSQL: which of the batch's raw versions (``record_key`` among the columns) have a
        key ``raw.<entity>`` never held, so are new to it; None when this tracker is off. Kept as
        pending until :meth:`committed`."""
        self._pending_raw = None
        if not self.usable or self._skip > 0:
            return None
        if self._raw_keys is None:
            self._raw_keys = HashSet(self._held(conn, f"raw.{self.entity}", "record_key"))
        self._pending_raw = self._hash(raw["record_key"])
        return ~self._raw_keys.holds(self._pending_raw)

    def _hash(self, keys: pd.Series | pa.Array) -> np.ndarray:
        """DuckDB's ``hash()`` of each key, in order (DuckDB keeps the insertion order of a query
        without ``ORDER BY``)."""
        if self._hasher is None:
            self._hasher = duckdb.connect(":memory:")
        column = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys)
        self._hasher.register("keys_df", pa.table({"k": column}))
        try:
            return np.asarray(self._hasher.execute("SELECT hash(k) AS h FROM keys_df").fetchnumpy()["h"], dtype=np.uint64)
        finally:
            self._hasher.unregister("keys_df")

    def _held(self, conn: Connection, table: str, key: str) -> np.ndarray:
        """The hash of every ``key`` ``table`` holds for the source (in this transaction)."""
        raw = raw_driver_connection(conn)
        if conn.dialect.name == "duckdb":
            held = raw.execute(f"SELECT hash({key}) AS h FROM {table} WHERE source = ?",  # noqa: S608 - registry names
                               [self.source]).fetchnumpy()["h"]
            return np.asarray(held, dtype=np.uint64)
        buf = bytearray()
        with raw.cursor() as cur, cur.copy(f"COPY (SELECT {key} FROM {table} WHERE source = %s) TO STDOUT (FORMAT csv)",  # noqa: S608 - registry names
                                           (self.source,)) as copy:
            for block in copy:
                buf += block
        if not buf:
            return np.empty(0, dtype=np.uint64)
        keys = pacsv.read_csv(pa.py_buffer(buf),
                              pacsv.ReadOptions(column_names=["k"]),
                              pacsv.ParseOptions(newlines_in_values=True),
                              pacsv.ConvertOptions(column_types={"k": pa.string()}, strings_can_be_null=False,
                                                   quoted_strings_can_be_null=False))
        return self._hash(keys.column("k"))

    def committed(self) -> None:
        """The load that made the pending splits committed: its new keys are the tables'."""
        split, self._pending = self._pending, None
        raw_keys, self._pending_raw = self._pending_raw, None
        self._skip -= 1
        if raw_keys is not None and self._raw_keys is not None:
            self._raw_keys.add(raw_keys)
        if split is None or self._keys is None:
            return
        new = split.way == NEW
        if new.any():
            self._keys.add(split.hashes[new], new=True)
        for k in split.keys[split.way == REST]:  # written the long way: the table's row is not known
            for recent in self._recent:
                recent.pop(k, None)
        inserted = {} if split.record_hashes is None else dict(
            zip(split.keys[new].tolist(), split.record_hashes[new].tolist(), strict=True))
        self._recent = [self._recent[1], inserted]

    def rolled_back(self) -> None:
        self._pending = self._pending_raw = None

    def switch_off(self) -> None:
        self.usable = False
        self._keys = self._raw_keys = None
        self._recent, self._pending, self._pending_raw = [{}, {}], None, None

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.close()
            self._hasher = None

    def __len__(self) -> int:
        """The core table's keys known (0 before the first split)."""
        return len(self._keys) if self._keys is not None else 0


# ----------------------------------------------------------------------------------------------
# the trackers of the extractions running in this process
# ----------------------------------------------------------------------------------------------
_GUARD = threading.Lock()
_ACTIVE: dict[tuple[str, str, str], list[KnownKeys]] = {}


def _slot(engine: Engine | Connection, source: str, entity: str) -> tuple[str, str, str]:
    return engine.engine.url.render_as_string(hide_password=True), source, entity


@contextmanager
def tracking(engine: Engine, source: str, entity: str, skip: int = 1) -> Iterator[KnownKeys | None]:
    """A tracker for one extraction's loads of ``entity`` (None for a catalogue: read whole, in one
    load), from its ``skip + 1``-th load. A second extraction of the same entity running meanwhile in
    this process (a backfill's partitions) switches both off."""
    if not REGISTRY[entity].incremental:
        yield None
        return
    known = KnownKeys(entity, source, skip)
    slot = _slot(engine, source, entity)
    with _GUARD:
        others = _ACTIVE.setdefault(slot, [])
        others.append(known)
        if len(others) > 1:
            for k in others:
                k.switch_off()
    try:
        yield known
    finally:
        known.close()
        with _GUARD:
            _ACTIVE[slot].remove(known)
            if not _ACTIVE[slot]:
                del _ACTIVE[slot]


def note_load(engine: Engine | Connection, source: str, entity: str, known: KnownKeys | None) -> None:
    """A load of ``entity`` is about to write: the trackers it does not go through are switched off."""
    slot = _slot(engine, source, entity)
    with _GUARD:
        for k in _ACTIVE.get(slot, ()):
            if k is not known:
                k.switch_off()

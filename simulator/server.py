"""HTTP API of the simulated provincial one-stop system (source contract section 1).

    with start_server(generate(n_dossiers=3000)) as sim:
        requests.get(f"{sim.url}/api/v1/dossiers", headers={"Authorization": "Bearer sim-token"})

Endpoints: `GET /api/v1/{dossiers,payments,procedures,units}` (paged, window on NgayCapNhat),
admin `POST /_sim/faults`, `POST /_sim/advance?changes=N[&now=yyyyMMddHHmmss][&seed=S]`,
`GET /_sim/stats`. Faults (`FaultConfig`) are drawn from a seeded random stream, one draw per
data request, so a sequential client sees the same sequence on every run.
`POST /_sim/inject[?replace=1]` plants raw records, served verbatim (see `inject.py`).
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import socket
import struct
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson

from simulator import inject
from simulator.dataset import Dataset
from simulator.workcal import from_ts, to_ts

PAGED = ("dossiers", "payments", "procedures", "units")
FAULT_KINDS = ("429", "500", "502", "503", "504", "reset", "slow")
_TS_RE = re.compile(r"^\d{14}$")


@dataclass
class FaultConfig:
    """Faults injected into data requests (`/api/v1/...`), deterministic from `seed`.

    fault_rate: fraction of data requests that fail, the kind drawn uniformly from `kinds`
        (429 with Retry-After: 1; 500/502/503/504 with an error body; "reset": the socket is
        closed without a response; "slow": the answer comes after `slow_seconds`).
    mutate_rate: after each dossier/payment page, about `mutate_rate * page_size` records of
        the same window get a new NgayCapNhat (mostly records not read yet, some already read),
        so they move to later pages or show up twice.
    abort_after: after this many successful data requests, every data request fails with 503
        until the fault config is replaced.
    """

    fault_rate: float = 0.0
    slow_seconds: float = 5.0
    mutate_rate: float = 0.0
    abort_after: int | None = None
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultConfig:
        """Build from a JSON object; unknown keys or bad values raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = set(body) - names
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        cfg = cls(**{k: (tuple(v) if k == "kinds" else v) for k, v in body.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError on out-of-range settings."""
        if not 0 <= self.fault_rate <= 1 or not 0 <= self.mutate_rate <= 1:
            raise ValueError("fault_rate and mutate_rate must be within [0, 1]")
        if self.slow_seconds < 0 or (self.abort_after is not None and self.abort_after < 0):
            raise ValueError("slow_seconds and abort_after must not be negative")
        bad = set(self.kinds) - set(FAULT_KINDS)
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {FAULT_KINDS}")


class ApiError(Exception):
    """An error answered with `{"error_code", "message"}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _State:
    """Mutable server state shared by handler threads (guarded by `lock`)."""

    dataset: Dataset
    token: str
    faults: FaultConfig
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)
    ok_data: int = 0
    stats: Counter[str] = field(default_factory=Counter)
    cache: OrderedDict[tuple[Any, ...], bytes] = field(default_factory=OrderedDict)
    pending: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    prefetcher: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "sim-prefetch"))
    #: render every page when it is asked, from the dataset's arrays: no page or record-text cache,
    #: no prefetch of the next page (what a source API does; the bench's user path reads it)
    per_request: bool = False
    #: stream: render each page from the arrays when it is asked or ahead of the reader (the next
    #: page, in the background), keep only the last few pages, never a record's text
    stream: bool = False

    def set_faults(self, cfg: FaultConfig) -> None:
        with self.lock:
            self.faults, self.rng, self.ok_data = cfg, random.Random(cfg.seed), 0


def _parse_ts(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not _TS_RE.match(value):
        raise ApiError(400, "invalid_parameter", f"{name} must be yyyyMMddHHmmss, got {value!r}")
    try:
        return to_ts(datetime.strptime(value, "%Y%m%d%H%M%S"))
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"{name} is not a valid date-time: {value!r}") from exc


def _parse_int(name: str, value: str | None, default: int, lo: int, hi: int | None) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {value!r}") from exc
    if n < lo or (hi is not None and n > hi):
        raise ApiError(400, "invalid_parameter", f"{name} must be within {lo}..{hi or 'inf'}, got {n}")
    return n


def _page_query(q: dict[str, list[str]]) -> tuple[int | None, int | None, int, int]:
    one = {k: v[-1] for k, v in q.items()}
    return (_parse_ts("updated_from", one.get("updated_from")), _parse_ts("updated_to", one.get("updated_to")),
            _parse_int("page", one.get("page"), 1, 1, None),
            _parse_int("page_size", one.get("page_size"), 500, 1, 1000))


def _render_page(state: _State, entity: str, frm: int | None, to: int | None, page: int, size: int
                 ) -> tuple[bytes, int, int]:
    """(body, window start position, window end position) for one page."""
    ds = state.dataset
    with state.lock:
        if inject.has_planted(ds, entity):  # planted records (simulator/inject.py): merged, uncached
            return inject.render_page(ds, entity, frm, to, page, size)
        if state.per_request:
            return _render_uncached(ds, entity, frm, to, page, size)
        key = (entity, frm, to, page, size, ds.version)
        if key in state.cache:
            state.stats["cache_hit"] += 1
            lo, hi = _bounds(ds, entity, frm, to)
            return state.cache[key], lo, hi
        lo, hi = _bounds(ds, entity, frm, to)
        a = min(hi, lo + (page - 1) * size)
        b = min(hi, a + size)
        idx = ds.ordered(entity)[0][a:b] if entity in ("dossiers", "payments") else np.arange(a, b)
        tail = f',"page":{page},"page_size":{size},"total":{hi - lo}}}'.encode()
        if state.stream:
            body = ds.page_json(entity, idx, b'{"data":', tail)
        else:
            body = b'{"data":' + ds.render_json(entity, idx) + tail
        state.cache[key] = body
        while len(state.cache) > 6:
            state.cache.popitem(last=False)
        return body, lo, hi


def _render_uncached(ds: Dataset, entity: str, frm: int | None, to: int | None, page: int, size: int
                     ) -> tuple[bytes, int, int]:
    lo, hi = _bounds(ds, entity, frm, to)
    a = min(hi, lo + (page - 1) * size)
    b = min(hi, a + size)
    idx = ds.ordered(entity)[0][a:b] if entity in ("dossiers", "payments") else np.arange(a, b)
    tail = f',"page":{page},"page_size":{size},"total":{hi - lo}}}'.encode()
    return ds.page_json(entity, idx, b'{"data":', tail), lo, hi


def _bounds(ds: Dataset, entity: str, frm: int | None, to: int | None) -> tuple[int, int]:
    if entity in ("dossiers", "payments"):
        return ds.window(entity, frm, to)
    return 0, ds.count(entity)


def _prefetch(state: _State, entity: str, frm: int | None, to: int | None, page: int, size: int) -> None:
    key = (entity, frm, to, page, size)
    with state.lock:
        if key in state.pending or state.stop.is_set():
            return
        state.pending[key] = True

    def job() -> None:
        try:
            if not state.stop.is_set():
                _render_page(state, entity, frm, to, page, size)
        finally:
            with state.lock:
                state.pending.pop(key, None)

    with contextlib.suppress(RuntimeError):
        state.prefetcher.submit(job)


def _mutate(state: _State, entity: str, lo: int, hi: int, read_until: int, size: int) -> int:
    """Move some records of the window [lo, hi) to the end (new NgayCapNhat)."""
    rate = state.faults.mutate_rate
    if rate <= 0 or entity not in ("dossiers", "payments") or hi <= lo:
        return 0
    with state.lock:
        want = rate * size
        n = int(want) + (1 if state.rng.random() < want - int(want) else 0)
        ahead = list(range(read_until, hi))
        behind = list(range(lo, read_until))
        picks: list[int] = []
        for _ in range(n):
            pool = behind if (behind and (not ahead or state.rng.random() < 0.3)) else ahead
            if not pool:
                break
            picks.append(pool.pop(state.rng.randrange(len(pool))))
        if not picks:
            return 0
        order = state.dataset.ordered(entity)[0]
        state.dataset.touch(entity, order[np.array(picks)])
        state.stats["mutated_records"] += len(picks)
        return len(picks)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DVCSimulator/1.0"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 60  # idle keep-alive connections are closed, so no thread hangs forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log."""

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: ApiError, headers: dict[str, str] | None = None) -> None:
        self.server.state.stats[str(err.status)] += 1
        self._send(err.status, orjson.dumps({"error_code": err.code, "message": err.message}), headers)

    def _reset(self) -> None:
        self.server.state.stats["reset"] += 1
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.server.state.token}"

    # -- routing ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        """Data endpoints and the stats endpoint."""
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        """Admin endpoints."""
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if not self._authorized():
                raise ApiError(401, "unauthorized", "missing or invalid bearer token")
            parts = url.path.rstrip("/").split("/")
            if method == "GET" and len(parts) == 4 and parts[1:3] == ["api", "v1"] and parts[3] in PAGED:
                self._data(parts[3], query)
            elif url.path.startswith("/_sim/"):
                self._admin(method, url.path, query)
            else:
                raise ApiError(404, "not_found", f"no such endpoint: {method} {url.path}")
        except ApiError as err:
            self._error(err)

    # -- data ---------------------------------------------------------------------------------
    def _data(self, entity: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        frm, to, page, size = _page_query(query)
        fault = self._inject_fault()
        if fault is True:
            return
        body, lo, hi = _render_page(state, entity, frm, to, page, size)
        with state.lock:
            state.ok_data += 1
            if fault is None:  # a late ("slow") answer was counted under "slow" on receipt, so
                state.stats["ok"] += 1  # the counts never wait on a handler still sleeping
                state.stats[f"ok_{entity}"] += 1
        self._send(200, body)
        read_until = min(hi, lo + page * size)
        if _mutate(state, entity, lo, hi, read_until, size) == 0 and read_until < hi and not state.per_request:
            _prefetch(state, entity, frm, to, page + 1, size)

    def _inject_fault(self) -> bool | None:
        """Answer with a fault when the config says so: True when the request is done, False when
        it is answered late ("slow"), None when no fault applies."""
        state = self.server.state
        with state.lock:
            cfg = state.faults
            if cfg.abort_after is not None and state.ok_data >= cfg.abort_after:
                kind = "aborted"
            elif cfg.fault_rate > 0 and state.rng.random() < cfg.fault_rate:
                kind = cfg.kinds[state.rng.randrange(len(cfg.kinds))]
            else:
                return None
            if kind in ("aborted", "slow"):  # the other kinds are counted as they are answered
                state.stats[kind] += 1
        if kind == "aborted":
            self._error(ApiError(503, "service_unavailable", "the system is unavailable (aborted run)"))
        elif kind == "429":
            self._error(ApiError(429, "too_many_requests", "rate limit exceeded"), {"Retry-After": "1"})
        elif kind == "reset":
            self._reset()
        elif kind == "slow":
            state.stop.wait(cfg.slow_seconds)
            return False
        else:
            self._error(ApiError(int(kind), "server_error", f"simulated HTTP {kind}"))
        return True

    # -- admin --------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        state.stats["admin"] += 1
        if method == "GET" and path == "/_sim/stats":
            with state.lock:
                body = {"requests": dict(state.stats), "faults": asdict(state.faults),
                        "ok_data_requests": state.ok_data, "now": state.dataset.now.strftime("%Y%m%d%H%M%S"),
                        "counts": {e: state.dataset.count(e) for e in PAGED}}
            self._send(200, orjson.dumps(body))
        elif method == "POST" and path == "/_sim/faults":
            self._set_faults()
        elif method == "POST" and path == "/_sim/advance":
            self._advance(query)
        elif method == "POST" and path == "/_sim/inject":
            self._inject(query)
        else:
            raise ApiError(404, "not_found", f"no such endpoint: {method} {path}")

    def _read_body(self) -> bytes:
        n = _parse_int("Content-Length", self.headers.get("Content-Length"), 0, 0, 10**6)
        return self.rfile.read(n) if n else b""

    def _set_faults(self) -> None:
        raw = self._read_body()
        try:
            body = orjson.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            cfg = FaultConfig.from_json(body)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise ApiError(400, "invalid_body", str(exc)) from exc
        self.server.state.set_faults(cfg)
        self._send(200, orjson.dumps({"faults": asdict(cfg)}))

    def _advance(self, query: dict[str, list[str]]) -> None:
        self._read_body()
        one = {k: v[-1] for k, v in query.items()}
        n = _parse_int("changes", one.get("changes"), 100, 0, 10**7)
        seed = _parse_int("seed", one.get("seed"), 0, 0, None)
        state = self.server.state
        with state.lock:
            now = _parse_ts("now", one.get("now"))
            ds = state.dataset
            now_ts = now if now is not None else ds.now_ts + 86400
            if now_ts <= ds.now_ts:
                raise ApiError(400, "invalid_parameter", "now must be after the simulator's current time")
            result = ds.advance(n, from_ts(now_ts), seed=seed)
            state.cache.clear()
            body = {"result": result, "now": ds.now.strftime("%Y%m%d%H%M%S")}
        self._send(200, orjson.dumps(body))

    def _inject(self, query: dict[str, list[str]]) -> None:
        """Plant raw records, served verbatim: body {"<entity>": [records...]}; ?replace=1 drops
        the earlier planted records of the entities named."""
        raw = self._read_body()
        replace = query.get("replace", ["0"])[-1] in ("1", "true")
        state = self.server.state
        try:
            body = orjson.loads(raw or b"null")
            with state.lock:
                counts = inject.inject_json(state.dataset, body, replace=replace)
                state.cache.clear()
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise ApiError(400, "invalid_body", str(exc)) from exc
        self._send(200, orjson.dumps({"planted": counts}))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, resets) are normal here: no traceback on stderr."""
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            super().handle_error(request, client_address)


class SimServer:
    """A simulator running in a background thread. Use `.stop()` or a `with` block."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="sim-server", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        """The bound address."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8765 (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def dataset(self) -> Dataset:
        """The dataset being served."""
        return self._httpd.state.dataset

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read the dataset consistently while the server runs."""
        return self._httpd.state.lock

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Replace the fault config (also resets the abort counter and the fault stream)."""
        self._httpd.state.set_faults(faults or FaultConfig())

    def stats(self) -> dict[str, int]:
        """Request counts by outcome."""
        with self._httpd.state.lock:
            return dict(self._httpd.state.stats)

    def stop(self) -> None:
        """Stop serving and close the socket (slow responses are cut short)."""
        state = self._httpd.state
        state.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        state.prefetcher.shutdown(wait=False, cancel_futures=True)
        self._thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _make_server(dataset: Dataset, host: str, port: int, token: str, faults: FaultConfig | None,
                 per_request: bool = False, stream: bool = False) -> _Server:
    cfg = faults or FaultConfig()
    cfg.validate()
    state = _State(dataset=dataset, token=token, faults=cfg, per_request=per_request, stream=stream)
    state.set_faults(cfg)
    return _Server((host, port), state)


def start_server(dataset: Dataset, host: str = "127.0.0.1", port: int = 0, token: str = "sim-token",
                 faults: FaultConfig | None = None, per_request: bool = False, stream: bool = False) -> SimServer:
    """Serve `dataset` in a background thread; port 0 picks a free port. ``per_request``: render
    each page when asked, with no cache and no prefetch. ``stream``: render each page when asked
    or just ahead of the reader, keep the last few pages only (no record text kept: the memory of
    the dataset's columns alone, whatever its size)."""
    return SimServer(_make_server(dataset, host, port, token, faults, per_request, stream))


def serve_forever(dataset: Dataset, host: str = "127.0.0.1", port: int = 0, token: str = "sim-token",
                  faults: FaultConfig | None = None, on_ready: Any = None, per_request: bool = False,
                  stream: bool = False) -> None:
    """Serve in the calling thread until SIGTERM/SIGINT; `on_ready(url)` is called once bound.
    ``per_request``: render each page when asked, with no cache and no prefetch. ``stream``:
    pages rendered when asked or just ahead of the reader, the last few kept (`start_server`)."""
    httpd = _make_server(dataset, host, port, token, faults, per_request, stream)
    stopping = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            httpd.state.stop.set()
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready:
            on_ready(f"http://{httpd.server_address[0]}:{httpd.server_address[1]}")
        httpd.serve_forever(poll_interval=0.1)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        httpd.server_close()
        httpd.state.prefetcher.shutdown(wait=False, cancel_futures=True)
        time.sleep(0)

"""tasks.source_api against a real HTTP server on 127.0.0.1 with scripted faults.

The ``api`` fixture serves the source contract's paging over in-memory records; a test pushes
a script of faults (``api.script``) that the next requests consume in order before normal
answers resume. Sleeps are recorded, not slept, so backoff bounds are asserted exactly.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import http_transport
from tasks.entities import REGISTRY
from tasks.http_transport import PageRecords
from tasks.normalize_pool import normalize_parts
from tasks.settings import Settings
from tasks.source_api import (
    ClientStats,
    SourceAuthError,
    SourceClient,
    SourceError,
    SourceRequestError,
    SourceResponseError,
    SourceUnavailable,
    format_timestamp,
    window_for,
)

TOKEN = "s3cr3t-token-XYZ"


# --- scripted server --------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted answer: ``kind`` in status/reset/slow/truncate/invalid_json/drip."""

    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0


@dataclass
class FakeApi:
    url: str
    records: dict[str, list[dict[str, Any]]]
    script: list[Fault] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    served_page_size: int | None = None
    grow_after_first_page: list[dict[str, Any]] = field(default_factory=list)
    move_after_first_page: str | None = None
    ignore_paging: bool = False  # serve the first page whatever the request asks for
    pages_served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Fault | None:
        with self.lock:
            return self.script.pop(0) if self.script else None


def _make_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # silence stderr
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            with api.lock:
                api.requests.append({"path": parts.path, "query": query, "auth": self.headers.get("Authorization")})
            fault = api.next_fault()
            if fault is not None:
                self._fault(fault)
                return
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._json(401, {"error_code": "unauthorized", "message": "invalid token"})
                return
            entity = parts.path.rsplit("/", 1)[-1]
            if not parts.path.startswith("/api/v1/") or entity not in api.records:
                self._json(404, {"error_code": "not_found", "message": f"no route {parts.path}"})
                return
            self._page(entity, query)

        def _page(self, entity: str, query: dict[str, str]) -> None:
            size = int(query.get("page_size", "500"))
            if not 1 <= size <= 1000:
                self._json(400, {"error_code": "bad_parameter", "message": "page_size must be 1..1000"})
                return
            size = api.served_page_size or size
            page = int(query.get("page", "1"))
            frm, to = query.get("updated_from", ""), query.get("updated_to", "99999999999999")
            if api.ignore_paging:
                page, frm = 1, ""
            with api.lock:
                rows = sorted(
                    (r for r in api.records[entity] if frm <= r["NgayCapNhat"] < to),
                    key=lambda r: (r["NgayCapNhat"], r["MaHoSo"]),
                )
                chunk = rows[(page - 1) * size : page * size]
                body = {"data": chunk, "page": page, "page_size": size, "total": len(rows)}
                api.pages_served += 1
                if api.pages_served == 1 and api.grow_after_first_page:
                    api.records[entity].extend(api.grow_after_first_page)
                    api.grow_after_first_page = []
                if api.pages_served == 1 and api.move_after_first_page:  # an unread record is updated
                    moved = next(r for r in api.records[entity] if r["MaHoSo"] == api.move_after_first_page)
                    moved["NgayCapNhat"] = "20240102000000"
            self._json(200, body)

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(body).encode(), headers)

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def _fault(self, fault: Fault) -> None:
            if fault.kind == "status":
                self._send(fault.status, fault.body, fault.headers)
            elif fault.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
            elif fault.kind == "slow":
                time.sleep(fault.seconds)
                self.close_connection = True
            elif fault.kind == "truncate":
                self.send_response(200)
                self.send_header("Content-Length", "5000")
                self.end_headers()
                self.wfile.write(b'{"data": [{"MaHoSo": "A"')
                self.wfile.flush()
                self.close_connection = True
            elif fault.kind == "invalid_json":
                self._send(200, b"<html>Gateway</html>")
            elif fault.kind == "drip":  # bytes keep coming, the response never ends
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                deadline = time.monotonic() + fault.seconds
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass
                self.close_connection = True

    return Handler


def _dossiers(n: int, start: int = 0) -> list[dict[str, Any]]:
    base = datetime(2024, 1, 1, 8, 0, 0)
    return [
        {"MaHoSo": f"H08-{i:05d}", "NgayCapNhat": format_timestamp(base + timedelta(minutes=i))}
        for i in range(start, start + n)
    ]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(url="", records={"dossiers": _dossiers(12), "payments": [], "procedures": [], "units": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _client(api: FakeApi, **kw: Any) -> tuple[SourceClient, SleepRecorder]:
    sleep = SleepRecorder()
    kw.setdefault("page_size", 5)
    kw.setdefault("read_timeout", 2)
    kw.setdefault("connect_timeout", 2)
    return SourceClient(api.url, kw.pop("token", TOKEN), sleep=sleep, rng=random.Random(7), **kw), sleep


def _raw(client: SourceClient, entity: str = "dossiers", **kw: Any) -> list[dict[str, Any]]:
    return [r for page in client.iter_pages(entity, **kw) for r in page.records]


def _all(client: SourceClient, entity: str = "dossiers", **kw: Any) -> list[dict[str, Any]]:
    return dedupe_latest(_raw(client, entity, **kw), "MaHoSo")[0]


def dedupe_latest(
    records: Iterable[dict[str, Any]],
    key: str | tuple[str, ...],
    updated_field: str = "NgayCapNhat",
) -> tuple[list[dict[str, Any]], int]:
    """What a run keeps of the records read (the normaliser's rule, on plain records): per key,
    the record with the latest ``updated_field`` (ties: the last one seen).

    Returns ``(records, dropped)``. Records keep the position of their key's first appearance.
    Timestamps compare as ``yyyyMMddHHmmss`` strings (numbers are compared by their digits); an
    empty or missing timestamp is older than any other. Records with a missing or empty key are
    never merged with each other: they are all kept. O(n).
    """
    best: dict[Any, tuple[str, dict[str, Any]]] = {}
    keyless: list[tuple[int, dict[str, Any]]] = []
    order: dict[Any, int] = {}
    seen = 0
    get_key = _key_getter(key)
    for position, record in enumerate(records):
        seen += 1
        k = get_key(record)
        if k is None:
            keyless.append((position, record))
            continue
        stamp = record.get(updated_field)
        stamp = "" if stamp is None else str(stamp)
        current = best.get(k)
        if current is None:
            order[k] = position
            best[k] = (stamp, record)
        elif stamp >= current[0]:
            best[k] = (stamp, record)
    kept = [rec for _, rec in best.values()]
    if keyless:
        merged = sorted(
            [(order[k], rec) for k, (_, rec) in best.items()] + keyless, key=lambda item: item[0]
        )
        kept = [rec for _, rec in merged]
    return kept, seen - len(kept)


def _key_getter(key: str | tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    if isinstance(key, str):
        def single(record: dict[str, Any]) -> Any:
            value = record.get(key)
            return None if value is None or value == "" else value
        return single
    fields = tuple(key)

    def composite(record: dict[str, Any]) -> Any:
        values = tuple(record.get(f) for f in fields)
        return None if any(v is None or v == "" for v in values) else values
    return composite


# --- paging -----------------------------------------------------------------------------------


def test_reads_every_page_by_number_and_stops_on_short_page(api: FakeApi) -> None:
    client, sleep = _client(api)
    pages = list(client.iter_pages("dossiers", seek=False))
    assert [p.page for p in pages] == [1, 2, 3]
    assert [len(p.records) for p in pages] == [5, 5, 2]
    assert [r["MaHoSo"] for p in pages for r in p.records] == [f"H08-{i:05d}" for i in range(12)]
    assert pages[0].total == 12 and pages[0].entity == "dossiers"
    assert client.stats.requests == 3 and client.stats.retries == 0 and sleep.waits == []
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in api.requests)


def test_seek_paging_starts_each_page_at_the_last_timestamp_read(api: FakeApi) -> None:
    client, _ = _client(api)
    pages = list(client.iter_pages("dossiers"))
    assert [(p.page, p.updated_from, len(p.records)) for p in pages] == [
        (1, None, 5), (1, "20240101080400", 5), (1, "20240101080800", 4),
    ]
    assert [q["query"].get("updated_from") for q in api.requests] == [None, "20240101080400", "20240101080800"]
    kept, dropped = dedupe_latest([r for p in pages for r in p.records], "MaHoSo")
    assert [r["MaHoSo"] for r in kept] == [f"H08-{i:05d}" for i in range(12)] and dropped == 2


def test_a_record_updated_while_paging_loses_another_by_page_numbers_not_by_seeking(api: FakeApi) -> None:
    api.move_after_first_page = "H08-00002"  # already read; moving it shifts H08-00005 back onto page 1
    client, _ = _client(api)
    by_number = {r["MaHoSo"] for r in _raw(client, seek=False)}
    assert "H08-00005" not in by_number  # the offset-paging hazard the seek mode exists for
    api.records["dossiers"] = _dossiers(12)
    api.pages_served = 0
    seeking = {r["MaHoSo"] for r in _raw(client)}
    assert seeking == {f"H08-{i:05d}" for i in range(12)}


def test_a_page_sharing_one_timestamp_falls_back_to_page_numbers(api: FakeApi) -> None:
    for r in api.records["dossiers"][:8]:
        r["NgayCapNhat"] = "20240101080000"
    client, _ = _client(api)
    pages = list(client.iter_pages("dossiers"))
    assert [(p.page, p.updated_from) for p in pages] == [(1, None), (2, None), (1, "20240101080900")]
    assert len(dedupe_latest([r for p in pages for r in p.records], "MaHoSo")[0]) == 12


def test_a_server_ignoring_the_paging_parameters_is_refused(api: FakeApi) -> None:
    api.ignore_paging = True
    client, _ = _client(api)
    with pytest.raises(SourceResponseError, match="same records twice in a row.*ignore the paging parameters"):
        _raw(client)
    assert len(api.requests) == 2


def test_pages_are_told_apart_by_the_entity_key_from_the_registry(api: FakeApi) -> None:
    # ten payments of one dossier, all updated at the same second: pages 1 and 2 differ only by
    # the payment key (Ma); told apart by MaHoSo they would look like the same page served twice
    api.records["payments"] = [{"Ma": f"TT-{i}", "MaHoSo": "H08-00001", "NgayCapNhat": "20240101080000"}
                               for i in range(10)]
    client, _ = _client(api)
    pages = list(client.iter_pages("payments"))
    assert [r["Ma"] for p in pages for r in p.records] == [f"TT-{i}" for i in range(10)]
    assert [p.page for p in pages] == [1, 2]


def test_pages_are_paged_by_their_outline_and_decoded_once_when_their_records_are_used(
        api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    # the paging reads each record's key and NgayCapNhat only; a page whose body goes to the
    # normaliser's worker is decoded there, never in the run's process
    decodes: list[int] = []
    real = http_transport.page_records
    monkeypatch.setattr(http_transport, "page_records", lambda body: decodes.append(len(body)) or real(body))
    client, _ = _client(api)
    pages = list(client.iter_pages("dossiers"))
    assert [(p.page, p.updated_from, len(p.records)) for p in pages] == [
        (1, None, 5), (1, "20240101080400", 5), (1, "20240101080800", 4)]
    assert decodes == [] and all(isinstance(p.records, PageRecords) for p in pages)
    assert [r for p in pages for r in p.records] == [r for p in pages for r in orjson.loads(p.body)["data"]]
    assert [p.records[-1]["MaHoSo"] for p in pages] == ["H08-00004", "H08-00008", "H08-00011"]
    assert len(decodes) == 3  # once per page, however often its records are read


def test_a_body_the_outline_reads_but_json_refuses_fails_where_its_records_are_used(api: FakeApi) -> None:
    # 1e400 is JSON's grammar but no double: the outline skips the field, orjson refuses it, so
    # the run's records (or the worker's chunk) fail with the source's error, not a decoder's
    body = b'{"data": [{"MaHoSo": "H08-1", "NgayCapNhat": "20240101080000", "LePhi": 1e400}], "total": 1}'
    api.script = [Fault("status", 200, body=body)]
    client, sleep = _client(api)
    pages = list(client.iter_pages("dossiers"))
    assert [len(p.records) for p in pages] == [1] and client.stats.retries == 0 and sleep.waits == []
    with pytest.raises(SourceResponseError, match="a page of the source is not valid JSON"):
        list(pages[0].records)
    with pytest.raises(SourceResponseError, match="a page of the source is not valid JSON"):
        normalize_parts("dossiers", [body], b"k" * 32)


def test_a_page_the_outline_refuses_is_decoded_in_full(api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    api.script = [Fault("status", 200, body=b'{"data": [{"MaHoSo": "H08-1", "NgayCapNhat": "20240101080000"}, 7], '
                                             b'"total": 2}')]
    client, _ = _client(api)
    with caplog.at_level(logging.WARNING):
        pages = list(client.iter_pages("dossiers"))
    assert pages[0].records == [{"MaHoSo": "H08-1", "NgayCapNhat": "20240101080000"}, {"_not_an_object": 7}]
    assert "1 record(s) of the page are not JSON objects" in caplog.text


def test_stops_when_total_reached_without_an_empty_extra_page(api: FakeApi) -> None:
    api.records["dossiers"] = _dossiers(10)
    client, _ = _client(api)
    assert len(_all(client, seek=False)) == 10
    assert client.stats.requests == 2


def test_empty_entity_is_one_request(api: FakeApi) -> None:
    client, _ = _client(api)
    assert _all(client, "payments") == []
    assert client.stats.requests == 1


def test_follows_a_total_that_grows_while_paging(api: FakeApi) -> None:
    api.records["dossiers"] = _dossiers(10)
    api.grow_after_first_page = _dossiers(3, start=10)
    client, _ = _client(api)
    assert len(_all(client, seek=False)) == 13
    assert client.stats.requests == 3


def test_server_capping_page_size_does_not_end_the_read_early(api: FakeApi) -> None:
    api.served_page_size = 3
    client, _ = _client(api)
    assert len(_all(client, seek=False)) == 12
    assert client.stats.requests == 4


def test_window_and_paging_parameters(api: FakeApi) -> None:
    client, _ = _client(api)
    aware = datetime(2024, 1, 31, 17, 0, 0, tzinfo=UTC)  # 00:00 next day in UTC+7
    list(client.iter_pages("dossiers", datetime(2024, 1, 1, 7, 5, 9), aware, start_page=3, seek=False))
    q = api.requests[0]["query"]
    assert api.requests[0]["path"] == "/api/v1/dossiers"
    assert q == {"updated_from": "20240101070509", "updated_to": "20240201000000", "page": "3", "page_size": "5"}


def test_unknown_entity_and_bad_page_size_are_programming_errors(api: FakeApi) -> None:
    client, _ = _client(api)
    with pytest.raises(ValueError, match="unknown entity"):
        next(client.iter_pages("citizens"))
    with pytest.raises(ValueError, match="page_size"):
        SourceClient(api.url, TOKEN, page_size=5000)


# --- retries ----------------------------------------------------------------------------------


def test_survives_every_retriable_fault_and_counts_them(api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    api.script = [
        Fault("status", 429, {"Retry-After": "2"}, b'{"error_code":"rate_limited","message":"slow down"}'),
        Fault("status", 500),
        Fault("status", 502, body=b"<html>Bad Gateway</html>"),
        Fault("status", 503),
        Fault("status", 504),
        Fault("reset"),
    ]
    client, sleep = _client(api, max_retries=6, backoff_base=0.5, backoff_max=60)
    caplog.set_level(logging.WARNING, logger="tasks.http_transport")
    assert len(_all(client)) == 12
    assert client.stats.retries == 6
    assert client.stats.by_reason == {"429": 1, "5xx": 4, "connection": 1}
    assert sleep.waits[0] == 2.0  # Retry-After honoured
    for n, wait in enumerate(sleep.waits[1:], start=2):  # full jitter under the exponential ceiling
        assert 0 <= wait <= min(60, 0.5 * 2 ** (n - 1))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6
    assert "source dossiers page 1: attempt 1/7" in warnings[0].getMessage()
    assert "429" in warnings[0].getMessage()


def test_truncated_and_invalid_json_are_retried(api: FakeApi) -> None:
    api.script = [Fault("truncate"), Fault("invalid_json")]
    client, _ = _client(api)
    assert len(_all(client)) == 12
    assert client.stats.by_reason == {"truncated": 1, "invalid_json": 1}


def test_read_timeout_is_retried(api: FakeApi) -> None:
    api.script = [Fault("slow", seconds=1.5)]
    client, _ = _client(api, read_timeout=0.3)
    assert len(_all(client)) == 12
    assert client.stats.by_reason == {"timeout": 1}


def test_a_response_that_never_ends_is_cut_off(api: FakeApi) -> None:
    api.script = [Fault("drip", seconds=3)]
    client, _ = _client(api, read_timeout=0.4, connect_timeout=0.4)
    started = time.monotonic()
    assert len(_all(client)) == 12
    assert time.monotonic() - started < 2.5
    assert client.stats.by_reason == {"timeout": 1}


def test_retry_after_is_capped_by_backoff_max(api: FakeApi) -> None:
    api.script = [Fault("status", 429, {"Retry-After": "3600"})]
    client, sleep = _client(api, backoff_max=5)
    _all(client)
    assert sleep.waits == [5.0]


def test_max_retries_exhausted_names_url_and_last_error(api: FakeApi) -> None:
    api.script = [Fault("status", 503, body=b'{"error_code":"down","message":"maintenance"}')] * 10
    client, sleep = _client(api, max_retries=3)
    with pytest.raises(SourceUnavailable) as err:
        _all(client)
    message = str(err.value)
    assert api.url + "/api/v1/dossiers?page=1&page_size=5" in message
    assert "after 4 attempts" in message and "HTTP 503" in message and "maintenance" in message
    assert client.stats.requests == 4 and len(sleep.waits) == 3
    assert isinstance(err.value, SourceError)


def test_retry_budget_is_shared_by_the_whole_client(api: FakeApi) -> None:
    client, sleep = _client(api, max_retries=5, retry_budget=3)
    api.script = [Fault("status", 500), Fault("status", 500)]
    _all(client)  # two retries used
    api.script = [Fault("status", 502), Fault("status", 502)]
    with pytest.raises(SourceUnavailable, match="retry budget exhausted") as err:
        _all(client)
    assert "HTTP 502" in str(err.value)
    assert client.stats.retries == 3 and len(sleep.waits) == 3


def test_connection_refused_gives_up_within_bounds() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleep = SleepRecorder()
    client = SourceClient(f"http://127.0.0.1:{port}", TOKEN, max_retries=2, sleep=sleep, connect_timeout=1)
    with pytest.raises(SourceUnavailable, match="connection"):
        _all(client)
    assert client.stats.by_reason == {"connection": 3} and len(sleep.waits) == 2


# --- fatal answers ----------------------------------------------------------------------------


def test_401_is_fatal_with_a_clear_message(api: FakeApi) -> None:
    client, sleep = _client(api, token="wrong-token")
    with pytest.raises(SourceAuthError, match="the source rejected the token: check DVC_SOURCE_TOKEN"):
        _all(client)
    assert client.stats.requests == 1 and sleep.waits == []


def test_403_is_fatal(api: FakeApi) -> None:
    api.script = [Fault("status", 403, body=b'{"error_code":"forbidden","message":"no rights"}')]
    client, _ = _client(api)
    with pytest.raises(SourceAuthError, match="DVC_SOURCE_TOKEN"):
        _all(client)
    assert client.stats.requests == 1


def test_400_names_the_bad_parameter(api: FakeApi) -> None:
    api.script = [Fault("status", 400, body=b'{"error_code":"bad_parameter","message":"updated_from: not yyyyMMddHHmmss"}')]
    client, sleep = _client(api)
    with pytest.raises(SourceRequestError, match="updated_from: not yyyyMMddHHmmss"):
        _all(client, updated_from=datetime(2024, 1, 1))
    assert client.stats.requests == 1 and sleep.waits == []


def test_404_points_at_the_url_setting(api: FakeApi) -> None:
    client = SourceClient(api.url + "/wrong-prefix", TOKEN, sleep=SleepRecorder())
    with pytest.raises(SourceRequestError, match="check DVC_SOURCE_URL"):
        _all(client)
    assert client.stats.requests == 1


def test_json_without_data_list_breaks_the_contract(api: FakeApi) -> None:
    api.script = [Fault("status", 200, body=b'{"items": []}')]
    client, _ = _client(api)
    with pytest.raises(SourceResponseError, match="without a 'data' list"):
        _all(client)
    assert client.stats.requests == 1


def test_token_never_appears_in_messages_or_logs(api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    echo = json.dumps({"error_code": "x", "message": f"token {TOKEN} is odd"}).encode()
    caplog.set_level(logging.DEBUG)
    api.script = [Fault("status", 500, body=echo), Fault("status", 429, body=echo)]
    client, _ = _client(api)
    _all(client)
    api.script = [Fault("status", 401, body=echo)]
    with pytest.raises(SourceAuthError) as auth:
        _all(client)
    api.script = [Fault("status", 400, body=echo)]
    with pytest.raises(SourceRequestError) as bad:
        _all(client)
    api.script = [Fault("status", 503, body=echo)] * 20
    with pytest.raises(SourceUnavailable) as down:
        _all(SourceClient(api.url, TOKEN, max_retries=1, sleep=SleepRecorder()))
    texts = [str(auth.value), str(bad.value), str(down.value), repr(client), caplog.text]
    assert all(TOKEN not in t for t in texts)
    assert "***" in str(auth.value)  # the echoed token was scrubbed, not just absent


def test_from_settings_uses_the_settings_fields(api: FakeApi) -> None:
    s = Settings(
        source_url=api.url, source_token=TOKEN, page_size=4, http_connect_timeout=3, http_read_timeout=7,
        http_max_retries=2, http_retry_budget=9, http_backoff_max=11,
    )
    client = SourceClient.from_settings(s, sleep=SleepRecorder())
    assert (client.page_size, client.connect_timeout, client.read_timeout) == (4, 3.0, 7.0)
    assert (client.max_retries, client.retry_budget, client.backoff_max) == (2, 9, 11.0)
    assert len(_all(client, seek=False)) == 12 and client.stats.requests == 3
    assert TOKEN not in repr(client)
    with pytest.raises(SourceRequestError, match="DVC_SOURCE_URL"):
        SourceClient.from_settings(Settings(source_url=None))


def test_stats_as_dict_is_plain() -> None:
    stats = ClientStats(requests=3, retries=1)
    stats.by_reason["5xx"] += 1
    assert json.loads(json.dumps(stats.as_dict()))["by_reason"] == {"5xx": 1}


# --- helpers ----------------------------------------------------------------------------------


def test_window_for() -> None:
    wm = datetime(2024, 3, 1, 12, 0)
    assert window_for(wm, 60, datetime(2024, 3, 2)) == (datetime(2024, 3, 1, 11, 0), datetime(2024, 3, 2))
    assert window_for(None, 60, None) == (None, None)
    with pytest.raises(ValueError, match="empty window"):
        window_for(wm, 0, wm)
    with pytest.raises(ValueError):
        window_for(wm, -1, None)


def _reference_dedupe(records: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    best: dict[Any, dict[str, Any]] = {}
    for r in records:
        k = r.get(key)
        if k in (None, ""):
            continue
        if k not in best or (r.get("NgayCapNhat") or "") >= (best[k].get("NgayCapNhat") or ""):
            best[k] = r
    return best


_stamp = st.one_of(st.none(), st.just(""), st.integers(0, 20).map(lambda d: f"202401{d + 1:02d}000000"))
_record = st.fixed_dictionaries(
    {"MaHoSo": st.one_of(st.sampled_from(["A", "B", "C", "D"]), st.none()), "NgayCapNhat": _stamp, "v": st.integers()}
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, max_size=40))
def test_dedupe_latest_property(records: list[dict[str, Any]]) -> None:
    kept, dropped = dedupe_latest(records, "MaHoSo")
    keyed = [r for r in kept if r["MaHoSo"] is not None]
    expected = _reference_dedupe(records, "MaHoSo")
    assert {r["MaHoSo"]: r for r in keyed} == expected
    assert all(any(k is r for k in kept) for r in expected.values())  # the very object kept (ties: last seen)
    assert len(keyed) == len(expected)
    assert sum(r["MaHoSo"] is None for r in kept) == sum(r["MaHoSo"] is None for r in records)
    assert dropped == len(records) - len(kept)
    first_seen = list(dict.fromkeys(r["MaHoSo"] for r in records if r["MaHoSo"] is not None))
    assert [r["MaHoSo"] for r in keyed] == first_seen
    assert [id(r) for r in kept if r["MaHoSo"] is None] == [id(r) for r in records if r["MaHoSo"] is None]


def test_dedupe_latest_composite_key_and_ties() -> None:
    a1 = {"MaDonVi": "X", "HieuLucTu": "20240101", "NgayCapNhat": "20240101000000", "n": 1}
    a2 = {"MaDonVi": "X", "HieuLucTu": "20240101", "NgayCapNhat": "20240101000000", "n": 2}
    b = {"MaDonVi": "X", "HieuLucTu": "20250701", "NgayCapNhat": "20230101000000", "n": 3}
    kept, dropped = dedupe_latest([a1, b, a2], ("MaDonVi", "HieuLucTu"))
    assert kept == [a2, b] and dropped == 1


# --- the project's simulator (if present) -----------------------------------------------------

_HAS_SIMULATOR = all(
    importlib.util.find_spec(m) is not None for m in ("simulator.server", "simulator.dataset")
)


_SIM_KEYS: dict[str, tuple[str, ...]] = {name: e.key for name, e in REGISTRY.items()}


def _read_simulator(url: str, page_size: int = 50) -> tuple[dict[str, dict[Any, Any]], SourceClient]:
    """Every entity through the client, deduplicated, keyed."""
    client = SourceClient(url, "sim-token", page_size=page_size, read_timeout=0.5, connect_timeout=1,
                          backoff_base=0.01, backoff_max=0.05, max_retries=10, retry_budget=2000)
    out: dict[str, dict[Any, Any]] = {}
    for entity, key in _SIM_KEYS.items():
        kept, _ = dedupe_latest(client.iter_records(entity), key)
        out[entity] = {tuple(r[f] for f in key): r for r in kept}
    return out, client


@pytest.mark.skipif(not _HAS_SIMULATOR, reason="simulator/server.py and dataset.py not built yet")
def test_simulator_with_faults_yields_the_fault_free_records() -> None:
    from simulator.dataset import generate
    from simulator.server import FaultConfig, start_server

    dataset = generate(seed=11, n_dossiers=600)
    with start_server(dataset, "127.0.0.1", port=0, token="sim-token", faults=FaultConfig()) as clean:
        expected, _ = _read_simulator(clean.url)
    faults = FaultConfig(fault_rate=0.2, slow_seconds=2.0, seed=3)
    started = time.monotonic()
    with start_server(dataset, "127.0.0.1", port=0, token="sim-token", faults=faults) as faulty:
        got, client = _read_simulator(faulty.url)
    elapsed = time.monotonic() - started
    assert elapsed < 90, f"reading through faults took {elapsed:.0f}s"
    assert len(expected["dossiers"]) == 600 and expected["payments"] and expected["units"]
    for entity in _SIM_KEYS:
        assert got[entity].keys() == expected[entity].keys(), entity
        assert got[entity] == expected[entity], entity
    assert client.stats.retries > 0 and set(client.stats.by_reason) <= {"429", "5xx", "connection", "timeout"}


@pytest.mark.skipif(not _HAS_SIMULATOR, reason="simulator/server.py and dataset.py not built yet")
def test_simulator_records_moving_while_paging_are_not_lost() -> None:
    from simulator.dataset import generate
    from simulator.server import FaultConfig, start_server

    dataset = generate(seed=12, n_dossiers=400)
    expected = {r["MaHoSo"] for r in dataset.dossiers}
    with start_server(dataset, faults=FaultConfig(mutate_rate=0.2, seed=1)) as sim:
        client = SourceClient(sim.url, "sim-token", page_size=40, sleep=SleepRecorder())
        records = list(client.iter_records("dossiers"))
    kept, dropped = dedupe_latest(records, "MaHoSo")
    assert {r["MaHoSo"] for r in kept} == expected
    assert dropped == len(records) - len(expected) and dropped > 0


def test_a_netrc_entry_for_the_source_does_not_replace_the_token(api: FakeApi, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """requests reads ~/.netrc (or $NETRC) for a request without its own auth, and an entry for
    the source's host would replace the bearer token with Basic credentials: the token is the
    request's auth, so the file is not consulted."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client, _ = _client(api)
    assert len(_all(client)) == 12
    assert {r["auth"] for r in api.requests} == {f"Bearer {TOKEN}"}

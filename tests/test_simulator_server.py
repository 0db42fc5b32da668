"""Simulator HTTP API over real HTTP on 127.0.0.1: auth, validation, paging, windows, faults, admin."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator.dataset import generate
from simulator.server import FaultConfig, SimServer, start_server

pytestmark = pytest.mark.timeout(60)
AUTH = {"Authorization": "Bearer sim-token"}


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with start_server(generate(seed=11, n_dossiers=1200)) as s:
        yield s


def get(sim: SimServer, path: str, timeout: float = 10, **params: Any) -> requests.Response:
    return requests.get(f"{sim.url}{path}", params=params, headers=AUTH, timeout=timeout)


def fetch_all(sim: SimServer, entity: str, page_size: int, **params: Any) -> tuple[list[dict[str, Any]], list[int]]:
    out, totals, page = [], [], 1
    while True:
        body = get(sim, f"/api/v1/{entity}", page=page, page_size=page_size, **params).json()
        out += body["data"]
        totals.append(body["total"])
        assert body["page"] == page and body["page_size"] == page_size
        if page * page_size >= body["total"]:
            return out, totals
        page += 1


def test_auth_required(sim: SimServer) -> None:
    r = requests.get(f"{sim.url}/api/v1/dossiers", timeout=5)
    assert r.status_code == 401 and set(r.json()) == {"error_code", "message"}
    r = requests.get(f"{sim.url}/api/v1/units", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 401
    assert requests.get(f"{sim.url}/_sim/stats", timeout=5).status_code == 401
    assert requests.post(f"{sim.url}/_sim/faults", json={"fault_rate": 1}, timeout=5).status_code == 401
    assert get(sim, "/api/v1/units").status_code == 200


@pytest.mark.parametrize("params", [
    {"page": 0}, {"page": "x"}, {"page_size": 0}, {"page_size": 1001}, {"updated_from": "2024"},
    {"updated_to": "20241340000000"}, {"updated_from": "2024-01-01T00:00"},
])
def test_bad_parameters_are_400(sim: SimServer, params: dict[str, Any]) -> None:
    r = get(sim, "/api/v1/dossiers", **params)
    assert r.status_code == 400
    body = r.json()
    assert body["error_code"] == "invalid_parameter" and body["message"]


def test_unknown_endpoint_404(sim: SimServer) -> None:
    r = get(sim, "/api/v1/nothing")
    assert r.status_code == 404 and r.json()["error_code"] == "not_found"


def test_full_paging_matches_dataset_order(sim: SimServer) -> None:
    recs = sim.dataset.records("dossiers")
    expected = [d["MaHoSo"] for d in sorted(recs, key=lambda d: (d["NgayCapNhat"], d["MaHoSo"]))]
    got, totals = fetch_all(sim, "dossiers", 137)
    assert [d["MaHoSo"] for d in got] == expected
    assert set(totals) == {1200}
    default = get(sim, "/api/v1/dossiers").json()
    assert default["page_size"] == 500 and len(default["data"]) == 500
    past = get(sim, "/api/v1/dossiers", page=99, page_size=100).json()
    assert past["data"] == [] and past["total"] == 1200
    pays, _ = fetch_all(sim, "payments", 1000)
    assert sorted(p["Ma"] for p in pays) == sorted(p["Ma"] for p in sim.dataset.payments)


def test_window_from_inclusive_to_exclusive(sim: SimServer) -> None:
    recs = sim.dataset.records("dossiers")
    stamps = Counter(d["NgayCapNhat"] for d in recs)
    lo = sorted(stamps)[len(stamps) // 3]
    hi = sorted(stamps)[2 * len(stamps) // 3]
    got, totals = fetch_all(sim, "dossiers", 50, updated_from=lo, updated_to=hi)
    expected = sorted((d["NgayCapNhat"], d["MaHoSo"]) for d in recs if lo <= d["NgayCapNhat"] < hi)
    assert [(str(d["NgayCapNhat"]), d["MaHoSo"]) for d in got] == expected
    assert totals[0] == len(expected)
    assert any(d["NgayCapNhat"] == lo for d in got) and all(d["NgayCapNhat"] != hi for d in got)
    only_hi = get(sim, "/api/v1/dossiers", updated_from=hi, updated_to=hi).json()
    assert only_hi["total"] == 0


def test_catalogues_paged_without_window(sim: SimServer) -> None:
    units, totals = fetch_all(sim, "units", 7, updated_from="20300101000000")
    assert units == sim.dataset.units and totals[0] == len(sim.dataset.units)
    procs, _ = fetch_all(sim, "procedures", 1000)
    assert procs == sim.dataset.procedures


def test_numeric_strings_and_empty_timestamps_over_http(sim: SimServer) -> None:
    got, _ = fetch_all(sim, "dossiers", 1000)
    as_str = [d for d in got if isinstance(d["TrangThaiHoSo"], str)]
    assert as_str and all(d["TrangThaiHoSo"].isdigit() for d in as_str)
    assert any(d["NgayTuChoi"] == "" for d in got) and any(d["NgayTuChoi"] is None for d in got)


def set_faults(sim: SimServer, **cfg: Any) -> None:
    r = requests.post(f"{sim.url}/_sim/faults", json=cfg, headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504"])
def test_http_error_faults(sim: SimServer, kind: str) -> None:
    set_faults(sim, fault_rate=1.0, kinds=[kind])
    r = get(sim, "/api/v1/dossiers")
    assert r.status_code == int(kind) and set(r.json()) == {"error_code", "message"}
    if kind == "429":
        assert r.headers["Retry-After"] == "1"
    set_faults(sim)
    assert get(sim, "/api/v1/dossiers").status_code == 200


def test_connection_reset_fault(sim: SimServer) -> None:
    set_faults(sim, fault_rate=1.0, kinds=["reset"])
    with pytest.raises(requests.ConnectionError):
        get(sim, "/api/v1/payments")
    assert sim.stats()["reset"] == 1


def test_slow_fault_times_out_a_short_client_then_answers(sim: SimServer) -> None:
    set_faults(sim, fault_rate=1.0, kinds=["slow"], slow_seconds=1.5)
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        get(sim, "/api/v1/dossiers", timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    r = get(sim, "/api/v1/units", timeout=10)
    assert r.status_code == 200 and time.monotonic() - t0 >= 1.4


def test_fault_sequence_is_deterministic(sim: SimServer) -> None:
    def run() -> list[str]:
        set_faults(sim, fault_rate=0.4, seed=9, kinds=["429", "500", "503"])
        return [str(get(sim, "/api/v1/units", page_size=5).status_code) for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert 3 <= sum(s != "200" for s in first) <= 24


def test_abort_after(sim: SimServer) -> None:
    set_faults(sim, abort_after=2)
    codes = [get(sim, "/api/v1/dossiers", page=p, page_size=100).status_code for p in (1, 2, 3, 4)]
    assert codes == [200, 200, 503, 503]
    set_faults(sim)
    assert get(sim, "/api/v1/dossiers", page=3, page_size=100).status_code == 200


def test_mutation_while_paging_duplicates_and_moves(sim: SimServer) -> None:
    set_faults(sim, mutate_rate=0.05, seed=4)
    got, totals = fetch_all(sim, "dossiers", 100)
    keys = Counter(d["MaHoSo"] for d in got)
    dupes = [k for k, n in keys.items() if n > 1]
    assert dupes, "records updated during paging should show up twice"
    for k in dupes:
        stamps = [str(d["NgayCapNhat"]) for d in got if d["MaHoSo"] == k]
        assert stamps[-1] > stamps[0]
    assert sim.stats()["mutated_records"] >= 5
    assert totals[0] == 1200 and max(totals) == 1200


def test_admin_advance_and_stats(sim: SimServer) -> None:
    before = requests.get(f"{sim.url}/_sim/stats", headers=AUTH, timeout=5).json()
    old_now = before["now"]
    r = requests.post(f"{sim.url}/_sim/advance", params={"changes": 50}, headers=AUTH, timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["now"] > old_now and body["result"]["new_dossiers"] == 15
    changed = get(sim, "/api/v1/dossiers", updated_from=str(int(old_now) + 1), page_size=1000).json()
    assert changed["total"] == 50
    stats = requests.get(f"{sim.url}/_sim/stats", headers=AUTH, timeout=5).json()
    assert stats["counts"]["dossiers"] == 1215 and stats["requests"]["ok"] >= 1
    bad = requests.post(f"{sim.url}/_sim/faults", json={"fault_rate": 3}, headers=AUTH, timeout=5)
    assert bad.status_code == 400
    bad = requests.post(f"{sim.url}/_sim/advance", params={"now": "20200101000000"}, headers=AUTH, timeout=5)
    assert bad.status_code == 400


def test_stop_is_prompt_even_during_a_slow_response() -> None:
    import threading

    s = start_server(generate(seed=1, n_dossiers=200), faults=FaultConfig(fault_rate=1.0, kinds=("slow",),
                                                                          slow_seconds=30))
    t = threading.Thread(target=lambda: requests.get(f"{s.url}/api/v1/units", headers=AUTH, timeout=40),
                         daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 5
    t.join(timeout=5)
    assert not t.is_alive()


def test_streaming_server_serves_the_same_pages_and_keeps_no_record_text() -> None:
    """`stream=True` (the bench above 1M dossiers): the bytes of the pre-rendering server, page
    after page, windows, after /_sim/advance; no record text kept, only the last few pages."""
    ref, streamed = generate(seed=12, n_dossiers=1500), generate(seed=12, n_dossiers=1500)
    ref.prerender()
    with start_server(ref) as a, start_server(streamed, stream=True) as b:
        def pages(sim: SimServer, entity: str, size: int, **params: Any) -> list[bytes]:
            out, page = [], 1
            while True:
                r = get(sim, f"/api/v1/{entity}", page=page, page_size=size, **params)
                assert r.status_code == 200
                out.append(r.content)
                if page * size >= r.json()["total"]:
                    return out
                page += 1

        for entity in ("dossiers", "payments", "procedures", "units"):
            for size in (1, 333, 1000):
                if entity == "dossiers" and size == 1:
                    continue
                assert pages(b, entity, size) == pages(a, entity, size), (entity, size)
        window = {"updated_from": "20240301000000", "updated_to": "20240501000000"}
        assert pages(b, "dossiers", 250, **window) == pages(a, "dossiers", 250, **window)
        for sim in (a, b):
            r = requests.post(f"{sim.url}/_sim/advance", params={"changes": 200, "seed": 3}, headers=AUTH, timeout=30)
            assert r.status_code == 200
        assert pages(b, "dossiers", 500) == pages(a, "dossiers", 500)
        assert pages(b, "payments", 500) == pages(a, "payments", 500)
        assert b.stats().get("cache_hit", 0) > 0  # the next page was rendered ahead of the reader
        assert len(b._httpd.state.cache) <= 6
    assert streamed._json_cache == {}  # no record text kept

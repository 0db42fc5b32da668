"""The bench's user path: the simulator's per-request mode and the process-tree RSS probe.

A per-request server must serve the very bytes the caching server serves (the user path and the
other stages read the same source), while rendering every page on request: no record-text cache,
no page cache, no prefetch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from bench.run import _tree_rss_bytes
from simulator.dataset import generate
from simulator.server import start_server

H = {"Authorization": "Bearer sim-token"}


def _pages(url: str, entity: str, size: int) -> list[bytes]:
    out, page = [], 1
    while True:
        r = requests.get(f"{url}/api/v1/{entity}", params={"page": page, "page_size": size}, headers=H, timeout=30)
        r.raise_for_status()
        out.append(r.content)
        if page * size >= r.json()["total"]:
            return out
        page += 1


def test_per_request_pages_equal_the_cached_pages_and_cache_nothing() -> None:
    cached, fresh = generate(seed=5, n_dossiers=900), generate(seed=5, n_dossiers=900)
    with start_server(cached) as a, start_server(fresh, per_request=True) as b:
        for entity in ("dossiers", "payments", "units", "procedures"):
            assert _pages(b.url, entity, 200) == _pages(a.url, entity, 200), entity
        assert b.stats().get("cache_hit", 0) == 0
    assert fresh._json_cache == {}  # no record text kept
    assert cached._json_cache  # while the default server keeps them


def test_tree_rss_counts_the_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "b = b'x' * (200 * 2**20); import time; time.sleep(30)"])
    try:
        for _ in range(100):
            if _tree_rss_bytes(child.pid) > 200 * 2**20:
                break
            time.sleep(0.05)
        assert _tree_rss_bytes(os.getpid()) > _tree_rss_bytes(child.pid) > 200 * 2**20
    finally:
        child.kill()
        child.wait()


def test_the_tree_peak_sees_a_child_started_after_it_and_rescans_only_now_and_then(monkeypatch) -> None:
    """The poller finds the tree again every RESCAN polls (a child that starts later is counted
    from then on), and reads the rest of the time only the tree's own ``statm``."""
    import signal

    import bench.run as bench_run

    scans: list[int] = []
    descendants = bench_run._descendants

    def scanned(root: int) -> list[int]:
        tree = descendants(root)
        scans.append(root)  # once the scan is over: a child started after this is not in it
        return tree

    monkeypatch.setattr(bench_run, "_descendants", scanned)
    # a small parent that starts a 300 MiB child when told to (the test's own process may hold
    # more than that already)
    spawn = ("import subprocess, sys, time; sys.stdin.readline(); "
             "subprocess.Popen([sys.executable, '-c', \"b = b'x' * (300 * 2**20); import time; time.sleep(60)\"]); "
             "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", spawn], stdin=subprocess.PIPE, start_new_session=True)
    started = time.monotonic()
    tree = bench_run._TreePeak(parent.pid)
    try:
        while not scans:  # the first scan is done: the child comes later
            time.sleep(0.05)
        assert tree.peak < 300 * 2**20
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 60
        while tree.peak < 300 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # more polls, no more scans than RESCAN allows
    finally:
        peak = tree.mib()
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    polls = (time.monotonic() - started) / 0.2
    assert peak > 300
    assert 2 <= len(scans) <= polls / bench_run._TreePeak.RESCAN + 1 < polls / 2

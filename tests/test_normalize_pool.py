"""The worker process that normalises an extraction's chunks (tasks/normalize_pool.py): what it
returns is what the run's own process computes, the run's warehouse is the same with it or
without it, a failure in it is raised in the run, and a single chunk never starts it."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from simulator.dataset import generate
from simulator.server import start_server
from tasks.normalize import normalize
from tasks.normalize_pool import ChunkNormalizer, NormalizerWorkerDied
from tests.test_faults import DATA_SEED, TOKEN, fingerprint_of, run_pipeline, settings_for

KEY = b"k" * 32


def _records(entity: str, n: int = 900) -> list[dict]:
    ds = generate(seed=3, n_dossiers=n, start=date(2024, 1, 1), end=date(2024, 6, 30))
    recs = ds.records(entity, quirks=True)
    recs[5]["NgayCapNhat"] = "2024-13-45"  # a parse issue travels back with its detail
    recs.append(dict(recs[7]))  # a repeated key: dedupe across parts
    return recs


def _assert_same(got, want) -> None:  # noqa: ANN001
    for name in ("core", "raw", "issues", "versions", "supplements"):
        a, b = getattr(got, name), getattr(want, name)
        if b is None:
            assert a is None, name
            continue
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    assert (got.rows_received, got.rows_duplicate) == (want.rows_received, want.rows_duplicate)
    assert dict(got.raw_by_key) == dict(want.raw_by_key)


@pytest.mark.parametrize("entity", ["dossiers", "payments"])
def test_the_worker_returns_what_the_run_process_computes(entity: str) -> None:
    recs = _records(entity)
    half = len(recs) // 2
    # page bodies as the source sends them, and a page that came already decoded, in reading order
    parts = [orjson.dumps({"data": recs[:half], "total": len(recs)}), recs[half:]]
    with ChunkNormalizer(entity, KEY, workers=1) as normalizer:
        got = normalizer.result(normalizer.submit(parts, in_worker=True))
        assert normalizer.started
    want = normalize(entity, recs, hash_key=KEY)
    assert len(want.issues) >= 1
    _assert_same(got, want)


def test_the_page_bodies_go_to_the_worker_out_of_band(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's page bodies are not copied into the request's pickle: they are its out-of-band
    buffers, written to the pipe from where they are (and the worker's answer is the same)."""
    import tasks.normalize_pool as pool

    recs = _records("dossiers", 600)
    bodies = [orjson.dumps({"data": recs[:300]}), orjson.dumps({"data": recs[300:]})]
    sent: list = []
    dumps = pool.dumps
    monkeypatch.setattr(pool, "dumps", lambda obj: sent.append(dumps(obj)) or sent[-1])
    with ChunkNormalizer("dossiers", KEY, workers=1) as normalizer:
        got = normalizer.result(normalizer.submit(bodies, in_worker=True))
    ((data, buffers),) = sent
    assert [bytes(b.raw()) for b in buffers] == bodies
    assert len(data) < 1_000 < min(map(len, bodies))
    _assert_same(got, normalize("dossiers", recs, hash_key=KEY))


def test_an_error_of_the_normaliser_is_raised_in_the_run_as_in_process() -> None:
    parts = [orjson.dumps({"data": [{"MaHoSo": "X"}]})]
    with pytest.raises(Exception) as here:
        normalize("no-such-entity", [{"MaHoSo": "X"}], hash_key=KEY)
    with ChunkNormalizer("no-such-entity", KEY, workers=1) as normalizer:
        future = normalizer.submit(parts, in_worker=True)
        with pytest.raises(type(here.value)) as there:
            normalizer.result(future)
    assert str(there.value) == str(here.value)


def test_a_killed_worker_fails_the_chunk_with_a_clear_error() -> None:
    parts = [orjson.dumps({"data": _records("dossiers", 300)})]
    normalizer = ChunkNormalizer("dossiers", KEY, workers=1)
    try:
        normalizer.result(normalizer.submit(parts, in_worker=True))
        worker = normalizer._pool[0]
        assert len(normalizer._pool) == 1
        worker.proc.kill()
        worker.proc.wait()
        with pytest.raises(NormalizerWorkerDied, match=r"dossiers: the worker process .* DVC_NORMALIZE_WORKERS=0"):
            normalizer.result(normalizer.submit(parts, in_worker=True))
    finally:
        normalizer.close()


def test_only_an_extraction_of_several_chunks_starts_the_worker() -> None:
    one = ChunkNormalizer("dossiers", KEY, workers=1)
    assert not one.wants_worker(None, 15_000)  # unknown size: the run's process
    assert not one.wants_worker(15_000, 15_000)  # one chunk
    assert one.wants_worker(15_001, 15_000)
    assert not ChunkNormalizer("dossiers", KEY, workers=0).wants_worker(10**6, 15_000)
    future = one.submit([orjson.dumps({"data": _records("dossiers", 50)})], in_worker=False)
    assert future.done() and not one.started


def test_a_run_loads_the_same_warehouse_with_and_without_the_worker(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    urls = {w: f"duckdb:///{tmp_path / f'w{w}.duckdb'}" for w in (1, 0)}
    data = generate(seed=DATA_SEED, n_dossiers=700)
    data._d["status"][[5, 600]] = 11  # not a status code: quarantined, so the quarantine is compared too
    with start_server(data, token=TOKEN) as sim:
        for workers, url in urls.items():
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="tasks.normalize_pool"):
                run_pipeline(settings_for(url, sim.url, tmp_path / f"w{workers}", normalize_workers=workers),
                             full_refresh=True, chunk_records=200)
            started = "normalising the chunks in a worker process" in caplog.text
            assert started == (workers == 1)
    assert fingerprint_of(urls[1]) == fingerprint_of(urls[0])


def test_two_workers_take_chunks_in_turn_and_their_results_come_back_in_order() -> None:
    recs = _records("payments", 600)
    chunks = [recs[i:i + 150] for i in range(0, len(recs), 150)]
    with ChunkNormalizer("payments", KEY, workers=2) as normalizer:
        futures = [normalizer.submit([orjson.dumps({"data": c})], in_worker=True) for c in chunks]
        assert normalizer.in_flight == 2
        got = [normalizer.result(f) for f in futures]
        pids = {w.proc.pid for w in normalizer._pool}
    assert len(pids) == 2
    for chunk, result in zip(chunks, got, strict=True):
        _assert_same(result, normalize("payments", chunk, hash_key=KEY))


def test_empty_pages_and_sub_windows_commit_no_empty_chunk() -> None:
    """A sub-window whose only page is empty (a catch-up's quiet months) gives no chunk to load;
    a chunk is flushed only with records in it (an empty chunk is still a transaction)."""
    from tasks.pipeline import _read_batches
    from tasks.runs import EntityResult
    from tasks.source_api import Page

    recs = _records("dossiers", 60)[:50]

    class Pages:
        def iter_pages(self, entity, lo, hi):  # noqa: ANN001, ANN202 - the reader's side of SourceClient
            if lo == 1:
                yield Page(entity, 1, 50, recs[:30], 30)
                yield Page(entity, 2, 50, recs[30:], 30)
            else:
                yield Page(entity, 1, 0, [], 30)

    flushed: list[int] = []
    res = EntityResult("dossiers")
    _read_batches(Pages(), "dossiers", [(0, 1), (1, 2), (2, 3), (3, None)], res,  # type: ignore[arg-type]
                  lambda parts, read, worker: flushed.append(sum(map(len, parts))), lambda: None, 40, 2, None,
                  lambda expected: False)
    assert flushed == [50]  # both pages (a chunk ends at a page boundary), then nothing
    assert len(res.batches) == 4


def test_an_answer_that_does_not_pickle_goes_as_its_text():
    """A worker's answer whose value cannot cross the pipe (an error holding a lambda) reaches the
    run as a RuntimeError naming why, the rest of the answer kept; any other answer as it is."""
    from tasks.pipes import dump_answer, loads

    class Odd(Exception):
        pass

    err = Odd("bad chunk")
    err.hook = lambda: None  # what pickle refuses
    kind, value, records = loads(dump_answer(("error", err, [("tasks.gx", 20, "a line")])))
    assert kind == "error" and isinstance(value, RuntimeError) and "pickle" in str(value).lower()
    assert records == [("tasks.gx", 20, "a line")]
    assert loads(dump_answer(("ok", {"rows": 3}))) == ("ok", {"rows": 3})


def test_a_chunk_is_decoded_with_the_collector_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker decodes a chunk's pages (millions of small dicts) with the collector paused, as
    the run's page reading does, and turns it back on after: decoding with the collector running
    took 1.5-2.8x as long (``bench/README.md``)."""
    import gc

    import tasks.normalize_pool as pool

    seen = []
    decode = pool.chunk_records
    monkeypatch.setattr(pool, "chunk_records", lambda parts: (seen.append(gc.isenabled()), decode(parts))[1])
    recs = _records("payments", 60)
    assert gc.isenabled()
    got = pool.normalize_parts("payments", [orjson.dumps({"data": recs})], KEY)
    assert seen == [False] and gc.isenabled()
    _assert_same(got, normalize("payments", recs, hash_key=KEY))


def test_the_workers_answer_carries_each_record_text_once_out_of_band() -> None:
    """The texts of a chunk's records are most of the worker's answer: the quarantine's lookup by key
    (``raw_by_key``) reads them from the raw frame, so the answer holds them once; they and the
    frames' other buffers cross out of band (the pickle itself is small: nothing copied into it),
    through a real pipe, and the run unpickles a working lookup (repeated records included)."""
    import os
    import threading

    from tasks.normalize_pool import normalize_parts
    from tasks.pipes import dump_answer, loads, read_message, write_message

    recs = _records("dossiers", 400)
    norm = normalize_parts("dossiers", [orjson.dumps({"data": recs + recs[:50]})], KEY)
    texts = int(norm.raw["record"].str.len().sum())
    data, buffers = dump_answer(("ok", norm))
    out_of_band = sum(b.raw().nbytes for b in buffers)
    assert len(data) + out_of_band < 2 * texts
    assert out_of_band > texts > 10 * len(data)
    r, w = os.pipe()
    with os.fdopen(r, "rb") as reader, os.fdopen(w, "wb") as writer:
        sending = threading.Thread(target=lambda: (write_message(writer, (data, buffers)), writer.close()))
        sending.start()
        message = read_message(reader)
        sending.join()
        assert read_message(reader) is None  # the end of the pipe
    back = loads(message)[1]
    _assert_same(back, norm)
    everyone = np.arange(len(norm.core))
    assert (back.raw_by_key.hashes(back.core["record_key"], everyone)
            == norm.raw_by_key.hashes(norm.core["record_key"])).all()
    assert dict(back.raw_by_key) == dict(norm.raw_by_key)
    assert len(back.raw_by_key) == 400 and back.raw_by_key[recs[7]["MaHoSo"]] == norm.raw["record"].iat[7]


def test_the_pipes_to_a_worker_hold_a_mebibyte() -> None:
    """A chunk's pages and answer are tens of MiB: the pipes to and from a worker are widened from
    Linux's 64 KiB (fewer reads and writes, each a switch between the processes)."""
    import fcntl

    from tasks.pipes import PIPE_BYTES, start_worker

    proc = start_worker("tasks.normalize_pool")
    try:
        assert [fcntl.fcntl(p.fileno(), fcntl.F_GETPIPE_SZ) for p in (proc.stdin, proc.stdout)] == [PIPE_BYTES] * 2
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def test_a_worker_ends_without_tearing_down_once_served(tmp_path):
    """``serve_then_exit``: what the worker wrote is flushed, then the process ends at once
    (no interpreter teardown, no exit handlers: the run waits for its workers to end); an error
    of the serving loop ends it as Python would."""
    import os
    import subprocess
    import sys

    code = ("import atexit, sys; from tasks.pipes import serve_then_exit; "
            "atexit.register(lambda: print('torn down')); "
            "serve_then_exit(lambda: (print('served', end=''), sys.stderr.write('logged')) and {fail})")
    ok = subprocess.run([sys.executable, "-c", code.format(fail="None")], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "served", "logged")
    bad = subprocess.run([sys.executable, "-c", code.format(fail="1 / 0")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert bad.returncode == 1 and "ZeroDivisionError" in bad.stderr and "torn down" in bad.stdout


def test_the_worker_hands_memory_back_only_while_no_chunk_waits() -> None:
    """``serve_chunks`` trims the heap after a chunk only when the next one has not been sent yet:
    a waiting chunk would fault the same pages back in at once. Real pipes; the trims counted."""
    import os
    import threading

    from tasks.normalize_pool import serve_chunks
    from tasks.pipes import dumps, loads, read_message, waiting, write_message

    recs = _records("payments", 60)
    request = dumps(("payments", [orjson.dumps({"data": recs, "total": len(recs)})], KEY))
    assert 2 * (len(request[0]) + sum(len(b.raw()) for b in request[1])) < 60_000  # two fit in a pipe
    r_req, w_req = os.pipe()
    r_ans, w_ans = os.pipe()
    with open(r_req, "rb") as requests, open(w_req, "wb") as send, open(w_ans, "wb") as answers, \
            open(r_ans, "rb") as replies:
        assert not waiting(requests)
        trims: list[bool] = []
        worker = threading.Thread(target=serve_chunks, args=(requests, answers),
                                  kwargs={"trim": lambda: trims.append(True)})
        write_message(send, request)  # two chunks sent at once: the first one's memory stays
        write_message(send, request)
        worker.start()
        for served in (1, 2):
            kind, norm = loads(read_message(replies))
            assert kind == "ok" and norm.rows_received == len(recs)
            if served == 1:
                assert trims == []  # the second chunk was waiting
        _wait_for(lambda: len(trims) == 1)  # nothing waited after the second
        write_message(send, request)  # a chunk sent alone: the worker then waits, memory handed back
        assert loads(read_message(replies))[0] == "ok"
        _wait_for(lambda: len(trims) == 2)
        send.close()  # the run closes the pipe: the worker's loop ends
        worker.join(timeout=60)
        assert not worker.is_alive()
    # none after the first chunk (the second waited), one after the second and one after the third
    assert len(trims) == 2


def _wait_for(condition, seconds: float = 10) -> None:  # noqa: ANN001
    import time

    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)


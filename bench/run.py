"""Province-scale benchmark: the pipeline against the network limit, the load limit and a peer.

    python -m bench.run                       # 50k and 1M dossiers (what `make bench` runs)
    python -m bench.run --sizes 5000000       # the manual 5M run (`make bench-5m`)
    python -m bench.run --sizes 50000 --no-pg --no-dlt
    python -m bench.run --sizes 50000 --stages user_path   # only the user's path and its baseline

Per size, one simulator process serves a generated dataset (page bodies pre-rendered up to 1M
dossiers, streamed above: ``serve``), and every
stage runs in its own child process, which reports its wall time and its own peak RSS
(``getrusage(RUSAGE_SELF)``). The pipeline and nightly stages time ``tasks.pipeline.run_nightly``,
what the nightly flow runs, without Prefect. Stages:

raw_fetch      every page of dossiers and payments with a bare ``requests`` loop, bodies discarded
pipeline_duckdb / pipeline_pg
               a first full load with ``run_nightly``: calendar, catalogues, dossiers, payments
               (extract, normalise, check, load), report tables of the whole period (no
               workbook), retention purge, GX settled
load_limit_duckdb / load_limit_pg / load_limit_pg_binary
               the rows the pipeline loaded (raw, core, versions) inserted again into empty
               tables by the engine's fastest native path (DuckDB: INSERT .. SELECT from Arrow;
               PostgreSQL: COPY of CSV; _binary: the raw tables in COPY's binary format, as
               the pipeline copies them)
dlt_peer       dlt's REST API source, same endpoints and page size, into DuckDB (extract + load)
nightly        10k changed dossiers (``POST /_sim/advance``) on top of the pipeline's warehouse
               (with its landed files and its analysts' copy): ``run_nightly`` end to end
               (calendar, catalogues, incremental extract, load, publication of two months with
               their workbooks and the analysts' copy, retention purge, GX settled)
user_path      the user's path, against a second simulator that renders every page when it is
               asked (no pre-render, no cache, no prefetch) at the default page size (500):
               ``user_raw_fetch``, a bare client reading every page, then ``user_cli``,
               ``dvc-etl run --full-refresh`` with default settings (through Prefect, its
               ephemeral server started by the CLI, a fresh PREFECT_HOME, DuckDB in a fresh
               folder) as a child process; wall time, the peak RSS of its whole process tree
               (``/proc`` polled every 0.2 s) and of its largest process (``RUSAGE_CHILDREN``)

With ``--baseline-ref REF`` (the previous design, e.g. the last commit before a redesign), a
temporary ``git worktree`` of REF runs its own ``pipeline`` stage too, against the same simulator
into its own warehouse, reported as ``pipeline_duckdb_baseline``: baseline then new, ``--repeat``
times, interleaved. Then ``bench/compare.py`` compares what they wrote: the report tables
(``mart.rpt_*``) and the core tables, row by row, run metadata left out; and the report tables of
the DuckDB and PostgreSQL pipelines.

Results print as a table per size and are written to ``bench/out/`` (JSON and markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

from bench.compare import CORE_TABLES, REPORTS, baseline_worktree, comparison_lines, stage_compare

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TOKEN = "bench-token"
PAGE_SIZE = 1000
START, END = date(2024, 1, 1), date(2024, 6, 30)
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULT_TAG = "BENCH_RESULT "


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_mib", round(_peak_rss_mib(), 1))
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)


# ----------------------------------------------------------------------------------------------
# the simulator process
# ----------------------------------------------------------------------------------------------
def serve(n: int, seed: int, per_request: bool = False) -> None:
    """The simulator process. Up to 1M dossiers every page is pre-rendered (1.9 GB at 1M); above,
    the pages are streamed (`serve_forever(..., stream=True)`: each rendered when asked or one
    page ahead of the reader, never the whole dataset: 5M dossiers take their columns' 2.2 GB).
    BENCH_STREAM=1 streams at every size, BENCH_STREAM=0 pre-renders at every size."""
    from simulator.dataset import generate
    from simulator.server import serve_forever

    forced = os.environ.get("BENCH_STREAM", "")
    stream = not per_request and (forced == "1" if forced in ("0", "1") else n > 1_000_000)
    t0 = time.perf_counter()
    ds = generate(seed=seed, n_dossiers=n, start=START, end=END)
    t1 = time.perf_counter()
    if not (per_request or stream):
        ds.prerender()
    t2 = time.perf_counter()
    info = {"generate_s": round(t1 - t0, 2), "prerender_s": round(t2 - t1, 2), "per_request": per_request,
            "stream": stream, "dossiers": ds.count("dossiers"), "payments": ds.count("payments"),
            "simulator_peak_rss_mib": round(_peak_rss_mib())}

    def ready(url: str) -> None:
        print(f"READY {url} {json.dumps(info)}", flush=True)

    serve_forever(ds, token=TOKEN, on_ready=ready, per_request=per_request, stream=stream)


def start_simulator(n: int, seed: int, per_request: bool = False) -> tuple[subprocess.Popen, str, dict[str, Any]]:
    cmd = [sys.executable, "-m", "bench.run", "serve", "--n", str(n), "--seed", str(seed)]
    proc = subprocess.Popen(cmd + (["--per-request"] if per_request else []), stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY "):
            _, url, info = line.strip().split(" ", 2)
            return proc, url, json.loads(info)
    raise RuntimeError(f"the simulator exited ({proc.wait()})")


# ----------------------------------------------------------------------------------------------
# stages (each runs in its own process: `python -m bench.run stage NAME JSON`)
# ----------------------------------------------------------------------------------------------
def stage_raw_fetch(p: dict[str, Any]) -> dict[str, Any]:
    import requests

    s = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    size = p.get("page_size", PAGE_SIZE)
    out: dict[str, Any] = {"rows": 0, "bytes": 0, "pages": 0, "page_size": size}
    t0 = time.perf_counter()
    for entity in ("dossiers", "payments"):
        page = 1
        while True:
            r = s.get(f"{p['url']}/api/v1/{entity}", params={"page": page, "page_size": size}, headers=headers)
            body = r.content
            r.raise_for_status()
            total = int(body[body.rindex(b'"total":') + 8 : -1])
            out["bytes"] += len(body)
            out["pages"] += 1
            if page * size >= total:
                out["rows"] += total
                break
            page += 1
    out["wall_s"] = time.perf_counter() - t0
    return out


class _Timers:
    """Accumulated time spent in the pipeline's parts (wrapping the functions it calls)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def wrap(self, obj: Any, name: str, label: str) -> None:
        fn = getattr(obj, name, None)
        if fn is None:  # a part another design does not have (or has moved): not timed
            return

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[label] = self.t.get(label, 0.0) + time.perf_counter() - t0

        setattr(obj, name, timed)


def _default(name: str) -> Any:
    from tasks.settings import Settings

    return Settings.model_fields[name].default


def _settings(p: dict[str, Any], workdir: Path) -> Any:
    from tasks.settings import Settings

    return Settings(source_url=p["url"], source_token=TOKEN, warehouse_url=p["warehouse_url"], page_size=PAGE_SIZE,
                    reports_dir=workdir / "reports", critical_threshold=10**9)


def _instrument() -> _Timers:
    import tasks.pipeline as pl
    import tasks.quality as q
    import tasks.reports as reports_mod
    import tasks.source_api as sa_mod
    import tasks.workbook as workbook_mod

    timers = _Timers()
    timers.wrap(pl, "normalize", "normalize")
    try:  # the chunks of an extraction: normalised in the run's process, or waited for from the worker
        import tasks.normalize_pool as pool
    except ImportError:  # a design without it (--baseline-ref)
        pool = None
    if pool is not None:
        timers.wrap(pool, "normalize", "normalize")
        timers.wrap(pool.ChunkNormalizer, "result", "normalize_wait")
    timers.wrap(q, "check", "check")
    timers.wrap(pl, "_validate_with_gx", "gx")
    timers.wrap(pl, "load_batch", "load")
    timers.wrap(sa_mod.SourceClient, "get_json", "fetch_wait")
    timers.wrap(reports_mod, "publish", "publish")  # publish_period imports both at call time
    if hasattr(workbook_mod, "lay_out"):  # the run's own time on workbooks: reading, writing, waiting, recording
        import tasks.workbook_worker as worker_mod

        for name in ("read_layout", "lay_out", "record_workbook"):
            timers.wrap(workbook_mod, name, "workbook")
        timers.wrap(worker_mod.WorkbookWorker, "finish", "workbook")
    else:  # a design before the workbook worker (--baseline-ref)
        timers.wrap(workbook_mod, "write_workbook", "workbook")
    return timers


def _timed_steps() -> Any:
    """``run_nightly``'s steps, each unit of work timed: ``seconds`` by entity (or step name) and
    ``ended``, when the last step of each name ended."""
    import tasks.pipeline as pl

    class TimedSteps(pl.NightlySteps):
        def __init__(self) -> None:
            self.seconds: dict[str, float] = {}
            self.ended: dict[str, float] = {}

        def run(self, name: str, unit: Any, /, **params: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return unit(**params)
            finally:
                t1 = self.ended[name] = time.perf_counter()
                key = params.get("entity", name)
                self.seconds[key] = self.seconds.get(key, 0.0) + t1 - t0

    return TimedSteps()


class _TreePeak:
    """The peak resident size of process ``root`` (default: this one) and its descendants (the
    normaliser's worker, the GX host, Prefect's server), polled from /proc every 0.2 s in a thread (a child's
    own ``ru_maxrss`` would count its parent's size at fork). The tree is found again every
    :attr:`RESCAN` polls only: reading every process's ``stat`` five times a second took the
    pipeline stage's process 2.5 s of CPU at 1M dossiers, on the cores the run needs."""

    RESCAN = 10

    def __init__(self, root: int | None = None) -> None:
        import threading

        self.root = root or os.getpid()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        polls, pids = 0, [self.root]
        while not self._stop.wait(0.2):
            if polls % self.RESCAN == 0:
                pids = _descendants(self.root)
            polls += 1
            self.peak = max(self.peak, _rss_bytes(pids))

    def mib(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak / 2**20, 1)


def stage_pipeline(p: dict[str, Any]) -> dict[str, Any]:
    """A first full load of the whole period with ``run_nightly`` (report tables, no workbook)."""
    import tasks.pipeline as pl
    from tasks.entities import CATALOGUES, INCREMENTAL
    from tasks.runs import finish_run, start_run
    from tasks.warehouse import open_warehouse, upgrade

    workdir = Path(p["workdir"])
    settings = _settings(p, workdir)
    engine = open_warehouse(settings)
    upgrade(engine)
    timers = _instrument()
    steps = _timed_steps()
    tree = _TreePeak()
    t0 = time.perf_counter()
    run_id = pl.new_run_id("bench")
    start_run(engine, run_id, "bench", settings.source_name)
    res = pl.run_nightly(engine, settings, run_id, full_refresh=True, periods=[(START, END)], workbook=False,
                         steps=steps)
    finish_run(engine, run_id, "success", True)
    if settings.warehouse_url.startswith("duckdb"):
        with engine.begin() as c:  # the publication's WAL is part of its cost (publish_period checkpointed the loads')
            c.exec_driver_sql("CHECKPOINT")
    t3 = time.perf_counter()
    t1, t2 = steps.ended["sync-catalogues"], steps.ended["extract-load"]
    out: dict[str, Any] = {}
    for entity in INCREMENTAL:
        e = res.entities[entity]
        out.update({f"{entity}_s": steps.seconds[entity], f"{entity}_rows": e.rows_received,
                    f"{entity}_loaded": e.rows_loaded, f"{entity}_quarantined": e.rows_quarantined})
    out.update(rows=sum(res.entities[e].rows_received for e in INCREMENTAL), wall_s=t3 - t0, catalogues_s=t1 - t0,
               extract_load_s=t2 - t1, reports_s=t3 - t2,
               catalogue_rows=sum(res.entities[c].rows_received for c in CATALOGUES),
               tree_peak_rss_mib=tree.mib(), **{f"{k}_s": v for k, v in timers.t.items()})
    engine.dispose()
    return out


_LIMIT_TABLES = ("raw.dossiers", "raw.payments", "core.dossiers", "core.payments", "core.dossier_versions")


def stage_load_limit(p: dict[str, Any]) -> dict[str, Any]:
    """Insert the pipeline's rows again into fresh tables by the engine's native bulk path."""
    import duckdb

    from tasks.warehouse import connect, upgrade

    src = duckdb.connect(p["source_duckdb"], read_only=True)
    engine = connect(p["warehouse_url"])
    upgrade(engine)
    engine.dispose()
    rows = 0
    if p["engine"] == "duckdb":
        tables = {t: src.execute(f"SELECT * FROM {t}").to_arrow_table() for t in _LIMIT_TABLES}  # noqa: S608
        src.close()
        rows = sum(t.num_rows for t in tables.values())
        con = duckdb.connect(p["warehouse_url"].removeprefix("duckdb:///"))
        # a raw table that is a view over landed files (tasks/landing.py) is written as one zstd
        # Parquet file, the native path of that design
        views = {f"{sc}.{n}" for sc, n in con.execute("SELECT schema_name, view_name FROM duckdb_views()").fetchall()}
        landing = Path(p["workdir"]) / "limit-parquet"
        landing.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        con.execute("BEGIN")
        for name, tbl in tables.items():
            if name in views:
                import pyarrow.parquet as pq

                pq.write_table(tbl, landing / f"{name}.parquet", compression="zstd")
                continue
            con.register("src_arrow", tbl)
            con.execute(f"INSERT INTO {name} SELECT * FROM src_arrow")  # noqa: S608
            con.unregister("src_arrow")
        con.execute("COMMIT")
        wall = time.perf_counter() - t0
        con.close()
        shutil.rmtree(landing, ignore_errors=True)
    else:
        import psycopg

        csvdir = Path(p["workdir"]) / "csv"
        csvdir.mkdir(exist_ok=True)
        files = {}
        for t in _LIMIT_TABLES:
            rows += src.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]  # noqa: S608
            if p.get("raw_binary") and t.startswith("raw."):
                # the raw tables (text and a timestamp) in COPY's binary format, as the pipeline
                # copies them (tasks.bulk.binary_rows), encoded before the clock starts as the CSV is
                import pyarrow as pa

                from tasks.bulk import PGCOPY_HEADER, PGCOPY_TRAILER, binary_rows

                f = csvdir / f"{t}.bin"
                with open(f, "wb") as out:
                    out.write(PGCOPY_HEADER)
                    for batch in src.sql(f"SELECT * FROM {t}").to_arrow_table().to_batches(100_000):  # noqa: S608
                        out.write(binary_rows(pa.Table.from_batches([batch])))
                    out.write(PGCOPY_TRAILER)
                files[t] = (f, "FORMAT binary")
                continue
            f = csvdir / f"{t}.csv"
            src.execute(f"COPY (SELECT * FROM {t}) TO '{f}' (FORMAT csv, HEADER false)")  # noqa: S608
            files[t] = (f, "FORMAT csv")
        src.close()
        dsn = p["warehouse_url"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as con:
            t0 = time.perf_counter()
            with con.cursor() as cur:
                for t, (f, options) in files.items():
                    with cur.copy(f"COPY {t} FROM STDIN ({options})") as cp, open(f, "rb") as fh:
                        while block := fh.read(1 << 20):
                            cp.write(block)
            con.commit()
            wall = time.perf_counter() - t0
    return {"rows": rows, "wall_s": wall}


def stage_dlt(p: dict[str, Any]) -> dict[str, Any]:
    import dlt
    from dlt.sources.rest_api import rest_api_source

    workdir = Path(p["workdir"])
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    source = rest_api_source({
        "client": {
            "base_url": p["url"] + "/api/v1/",
            "auth": {"type": "bearer", "token": TOKEN},
            "paginator": {"type": "page_number", "base_page": 1, "page_param": "page", "total_path": None,
                          "stop_after_empty_page": True,
                          **({"maximum_page": p["max_pages"]} if p.get("max_pages") else {})},
        },
        "resource_defaults": {"endpoint": {"params": {"page_size": PAGE_SIZE}, "data_selector": "data"},
                              "write_disposition": "append"},
        "resources": ["dossiers", "payments"],
    })
    pipe = dlt.pipeline(pipeline_name="bench_peer", pipelines_dir=str(workdir / "dlt"),
                        destination=dlt.destinations.duckdb(str(workdir / "dlt.duckdb")), dataset_name="peer")
    t0 = time.perf_counter()
    pipe.run(source)
    wall = time.perf_counter() - t0
    import duckdb

    con = duckdb.connect(str(workdir / "dlt.duckdb"), read_only=True)
    rows = sum(con.execute(f"SELECT count(*) FROM peer.{t}").fetchone()[0] for t in ("dossiers", "payments"))  # noqa: S608
    con.close()
    return {"rows": rows, "wall_s": wall, "max_pages": p.get("max_pages")}


def stage_nightly(p: dict[str, Any]) -> dict[str, Any]:
    """``run_nightly`` on top of the big warehouse (the changes were made in the simulator)."""
    import tasks.pipeline as pl
    from tasks.entities import INCREMENTAL
    from tasks.runs import finish_run, start_run
    from tasks.warehouse import open_warehouse, upgrade

    workdir = Path(p["workdir"])
    settings = _settings(p, workdir)
    timers = _instrument()
    steps = _timed_steps()
    t0 = time.perf_counter()
    engine = open_warehouse(settings)
    upgrade(engine)
    run_id = pl.new_run_id("bench-nightly")
    start_run(engine, run_id, "nightly", settings.source_name)
    res = pl.run_nightly(engine, settings, run_id, steps=steps)
    finish_run(engine, run_id, "success", True)
    t2 = time.perf_counter()
    t1 = steps.ended["extract-load"]
    engine.dispose()
    return {"rows": sum(res.entities[e].rows_received for e in INCREMENTAL), "wall_s": t2 - t0,
            "extract_load_s": t1 - t0, "reports_s": t2 - t1, **{f"{k}_s": v for k, v in timers.t.items()}}


def _tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now (Linux ``/proc``)."""
    return _rss_bytes(_descendants(root))


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it now (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _rss_bytes(pids: list[int]) -> int:
    """Resident bytes of the processes ``pids`` now (those gone count nothing)."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def stage_user_cli(p: dict[str, Any]) -> dict[str, Any]:
    """``dvc-etl run --full-refresh`` with default settings, as a user runs it (its own process
    tree, polled for the peak RSS of the whole tree)."""
    import duckdb

    home = Path(p["workdir"]) / "user"
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "PREFECT_"))}
    env.update(DVC_SOURCE_URL=p["url"], DVC_SOURCE_TOKEN=TOKEN, DVC_HASH_KEY="bench-" + "k" * 58,
               PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = Path(sys.executable).with_name("dvc-etl")
    prefect_init_s = None
    if not p.get("cold_prefect"):
        # the nightly runs with the PREFECT_HOME of the runs before: create Prefect's database
        # first (its temporary server started and stopped once), timed apart
        t_init = time.perf_counter()
        init = subprocess.run([sys.executable, "-c", "from prefect.server.api.server import SubprocessASGIServer "
                               "as S; s = S(); s.start(); s.stop()"], cwd=home, capture_output=True, text=True,
                              env={**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"})
        if init.returncode:
            raise RuntimeError(f"creating Prefect's database failed ({init.returncode}): {init.stderr[-2000:]}")
        prefect_init_s = time.perf_counter() - t_init
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(cli), "run", "--full-refresh", "--quiet"], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tree = _TreePeak(proc.pid)
    with proc.stdout as out_pipe:  # type: ignore[union-attr]
        lines = out_pipe.readlines()
        proc.wait()
        wall = time.perf_counter() - t0
    peak = tree.mib()
    tail = b"".join(lines).decode(errors="replace").strip().splitlines()[-3:]
    rows = flow_s = None
    wh = home / "data" / "dvc.duckdb"
    if wh.exists():
        con = duckdb.connect(str(wh), read_only=True)
        rows = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
                   for t in ("raw.dossiers", "raw.payments"))
        got = con.execute("SELECT max(epoch(finished_at) - epoch(started_at)) FROM dq.runs").fetchone()
        flow_s = got[0] if got else None
        con.close()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "rows": rows, "exit_code": proc.returncode, "peak_rss_mib": peak,
            "flow_s": flow_s, "outside_flow_s": wall - flow_s if flow_s is not None else None,
            "largest_process_rss_mib": round(largest, 1), "tail": tail,
            "prefect_home": "fresh" if prefect_init_s is None else "initialised",
            "prefect_home_init_s": prefect_init_s}


STAGES = {"raw_fetch": stage_raw_fetch, "pipeline": stage_pipeline, "load_limit": stage_load_limit,
          "dlt": stage_dlt, "nightly": stage_nightly,
          "user_cli": stage_user_cli, "compare": stage_compare}


def run_stage(name: str, params: dict[str, Any], timeout: float = 7200, code: Path = ROOT) -> dict[str, Any]:
    """Run a stage in a child process, of this tree's code or of another tree's (``code``: the
    baseline's worktree, first on the child's ``PYTHONPATH``)."""
    t0 = time.perf_counter()
    env = None
    if code != ROOT:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "bench.run", "stage", name, json.dumps(params)], cwd=code,
                          capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        print(f"  stage {name} FAILED (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        return {"error": tail[-500:], "process_s": time.perf_counter() - t0}
    out = json.loads(lines[-1][len(RESULT_TAG):])
    out["process_s"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------
def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


def _pg_db(name: str, create: bool) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if create:
            c.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def user_path(n: int, args: argparse.Namespace, work: Path, st: dict[str, Any], res: dict[str, Any]) -> None:
    """The user's path and its own raw-fetch baseline, against a simulator rendering per request."""
    print(f"   user path: starting a per-request simulator ({n:,} dossiers)...", flush=True)
    sim, url, info = start_simulator(n, args.seed, per_request=True)
    res.setdefault("dataset", info)
    try:
        base = {"url": url, "workdir": str(work)}
        print("   user path: raw fetch (page size 500, rendered per request)...", flush=True)
        st["user_raw_fetch"] = run_stage("raw_fetch", {**base, "page_size": _default("page_size")})
        print("   user path: dvc-etl run --full-refresh...", flush=True)
        st["user_cli"] = run_stage("user_cli", {**base, "cold_prefect": args.cold_prefect})
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        shutil.rmtree(work / "user", ignore_errors=True)


def pipelines_duckdb(args: argparse.Namespace, base: dict[str, Any], work: Path, st: dict[str, Any]) -> Path | None:
    """The DuckDB pipeline stage and, with ``--baseline-ref``, the baseline's (its own code, same
    simulator, its own warehouse), interleaved: baseline then new, ``--repeat`` times, so both see
    the same machine. The last run of each keeps its warehouse: the new one at
    ``work/pipeline.duckdb`` (the later stages read it), the baseline's, returned, in its own folder."""
    runs: dict[str, list[float | None]] = {"pipeline_duckdb": [], "pipeline_duckdb_baseline": []}
    base_duck = None
    for i in range(args.repeat):
        last = i == args.repeat - 1
        tag = f" (run {i + 1} of {args.repeat})" if args.repeat > 1 else ""
        if args.baseline:
            tree, commit = args.baseline
            bdir = work / f"baseline-{i}"
            bdir.mkdir()
            base_duck = bdir / "pipeline.duckdb"
            print(f"   pipeline -> DuckDB, baseline {commit}{tag}...", flush=True)
            r = run_stage("pipeline", {**base, "workdir": str(bdir), "warehouse_url": f"duckdb:///{base_duck}"},
                          code=tree)
            runs["pipeline_duckdb_baseline"].append(r.get("wall_s"))
            if last:
                st["pipeline_duckdb_baseline"] = r
            else:
                shutil.rmtree(bdir, ignore_errors=True)
        ndir = work if last else work / f"new-{i}"
        ndir.mkdir(exist_ok=True)
        print(f"   pipeline -> DuckDB{tag}...", flush=True)
        r = run_stage("pipeline", {**base, "workdir": str(ndir), "warehouse_url": f"duckdb:///{ndir / 'pipeline.duckdb'}"})
        runs["pipeline_duckdb"].append(r.get("wall_s"))
        if last:
            st["pipeline_duckdb"] = r
        else:
            shutil.rmtree(ndir, ignore_errors=True)
    for name, walls in runs.items():
        if name in st and args.repeat > 1:
            st[name]["runs_wall_s"] = walls
    return base_duck if base_duck is not None and base_duck.exists() else None


def _compare(duck: Path, other: Path | str, tables: list[str]) -> dict[str, Any]:
    """The ``compare`` stage (a child reading both warehouses) of the new DuckDB warehouse with
    another: a DuckDB file or a database URL."""
    if not duck.exists():
        return {"error": "no new DuckDB warehouse (its pipeline failed)"}
    url = f"duckdb:///{other}" if isinstance(other, Path) else other
    return run_stage("compare", {"a": f"duckdb:///{duck}", "b": url, "tables": tables})


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"dvc-bench-{n}-"))
    res: dict[str, Any] = {"size": n, "stages": {}}
    st = res["stages"]
    if args.only_user_path:
        print(f"\n== {n:,} dossiers: the user's path only", flush=True)
        try:
            user_path(n, args, work, st, res)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res["ratios"] = ratios(st)
        return res
    print(f"\n== {n:,} dossiers: starting the simulator (generate + pre-render)...", flush=True)
    sim, url, info = start_simulator(n, args.seed)
    res["dataset"] = info
    print(f"   {info}", flush=True)
    pg_dbs: list[str] = []
    try:
        base = {"url": url, "workdir": str(work)}
        print("   raw fetch...", flush=True)
        st["raw_fetch"] = run_stage("raw_fetch", base)
        duck = work / "pipeline.duckdb"
        base_duck = pipelines_duckdb(args, base, work, st)
        cmps = res["comparisons"] = {}
        if base_duck is not None:
            print("   comparing the report and core tables with the baseline's...", flush=True)
            cmps["baseline"] = _compare(duck, base_duck, [REPORTS, *CORE_TABLES])
            shutil.rmtree(base_duck.parent, ignore_errors=True)
        elif args.baseline:
            cmps["baseline"] = {"error": "no baseline DuckDB warehouse (its pipeline failed)"}
        if args.pg:
            print("   pipeline -> PostgreSQL...", flush=True)
            db = f"dvc_bench_{os.getpid()}_p"
            pg_dbs.append(db)
            pg_url = _pg_db(db, True)
            st["pipeline_pg"] = run_stage("pipeline", {**base, "warehouse_url": pg_url})
            if "error" not in st["pipeline_pg"]:
                print("   comparing the report tables, DuckDB vs PostgreSQL...", flush=True)
                cmps["postgresql"] = _compare(duck, pg_url, [REPORTS])
        if duck.exists():
            print("   load limit (DuckDB)...", flush=True)
            st["load_limit_duckdb"] = run_stage("load_limit", {**base, "engine": "duckdb", "source_duckdb": str(duck),
                                                               "warehouse_url": f"duckdb:///{work / 'limit.duckdb'}"})
            (work / "limit.duckdb").unlink(missing_ok=True)
            if args.pg:
                print("   load limit (PostgreSQL)...", flush=True)
                db = f"dvc_bench_{os.getpid()}_l"
                pg_dbs.append(db)
                st["load_limit_pg"] = run_stage("load_limit", {**base, "engine": "pg", "source_duckdb": str(duck),
                                                               "warehouse_url": _pg_db(db, True)})
                _pg_db(db, False)
                shutil.rmtree(work / "csv", ignore_errors=True)
                print("   load limit (PostgreSQL, the raw tables in COPY's binary format)...", flush=True)
                db = f"dvc_bench_{os.getpid()}_b"
                pg_dbs.append(db)
                st["load_limit_pg_binary"] = run_stage("load_limit", {
                    **base, "engine": "pg", "source_duckdb": str(duck), "warehouse_url": _pg_db(db, True),
                    "raw_binary": True})
                _pg_db(db, False)
                shutil.rmtree(work / "csv", ignore_errors=True)
        if args.dlt:
            print("   dlt peer -> DuckDB...", flush=True)
            cap = args.dlt_max_pages if n > args.dlt_full_up_to else None
            st["dlt_peer"] = run_stage("dlt", {**base, "max_pages": cap})
            shutil.rmtree(work / "dlt", ignore_errors=True)
            (work / "dlt.duckdb").unlink(missing_ok=True)
        if args.nightly and duck.exists():
            print(f"   nightly incremental of {args.changes:,} changes...", flush=True)
            nightly_db = work / "nightly.duckdb"
            shutil.copyfile(duck, nightly_db)
            landed = work / "pipeline-landing"  # a raw layer of landed files (tasks/landing.py) goes along
            if landed.is_dir():
                shutil.copytree(landed, work / "nightly-landing")
            analysts = work / "pipeline-analyst.duckdb"  # and the analysts' copy, as every night has one
            if analysts.is_file():
                shutil.copyfile(analysts, work / "nightly-analyst.duckdb")
            import requests

            adv = requests.post(f"{url}/_sim/advance", params={"changes": args.changes, "seed": 7},
                                headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600)
            adv.raise_for_status()
            st["nightly"] = run_stage("nightly", {**base, "warehouse_url": f"duckdb:///{nightly_db}"})
            st["nightly"]["changes"] = args.changes
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        for db in pg_dbs:
            try:
                _pg_db(db, False)
            except Exception as exc:  # noqa: BLE001
                print(f"   could not drop {db}: {exc}", file=sys.stderr)
    try:
        if args.user_path:  # after the pre-rendered simulator has gone: one dataset in memory
            user_path(n, args, work, st, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["ratios"] = ratios(st)
    return res


def _get(st: dict[str, Any], stage: str, key: str) -> float | None:
    v = st.get(stage, {}).get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _sub(a: float | None, b: float) -> float | None:
    return a - b if a is not None else None


def _per_row(st: dict[str, Any], stage: str, key: str = "wall_s") -> float | None:
    t, rows = _get(st, stage, key), _get(st, stage, "rows")
    return t / rows if t is not None and rows else None


def _paired(st: dict[str, Any], a: str, b: str) -> float | None:
    """The median of ``a``'s wall over ``b``'s, run by run (both run ``--repeat`` times, interleaved)."""
    wa = st.get(a, {}).get("runs_wall_s") or [_get(st, a, "wall_s")]
    wb = st.get(b, {}).get("runs_wall_s") or [_get(st, b, "wall_s")]
    pairs = [x / y for x, y in zip(wa, wb, strict=False) if x and y]
    return round(statistics.median(pairs), 2) if pairs else None


def ratios(st: dict[str, Any]) -> dict[str, Any]:
    """Time ratios for the same rows (per-row times, so a peer read on a prefix compares too)."""
    fetch = _get(st, "raw_fetch", "wall_s")
    duck = _get(st, "pipeline_duckdb", "wall_s")
    duck_el = _get(st, "pipeline_duckdb", "extract_load_s")
    return {
        # the new design over the previous one (--baseline-ref): the median of the interleaved pairs
        "pipeline_duckdb_over_baseline": _paired(st, "pipeline_duckdb", "pipeline_duckdb_baseline"),
        "pipeline_duckdb_extract_load_over_baseline": _div(duck_el, _get(st, "pipeline_duckdb_baseline",
                                                                         "extract_load_s")),
        "pipeline_duckdb_over_raw_fetch": _div(duck, fetch),
        "pipeline_duckdb_extract_load_over_raw_fetch": _div(duck_el, fetch),
        "pipeline_pg_over_raw_fetch": _div(_get(st, "pipeline_pg", "wall_s"), fetch),
        "pipeline_load_over_load_limit_duckdb": _div(_get(st, "pipeline_duckdb", "load_s"),
                                                     _get(st, "load_limit_duckdb", "wall_s")),
        "pipeline_load_over_load_limit_pg": _div(_get(st, "pipeline_pg", "load_s"),
                                                 _get(st, "load_limit_pg", "wall_s")),
        "pipeline_load_over_load_limit_pg_binary": _div(_get(st, "pipeline_pg", "load_s"),
                                                        _get(st, "load_limit_pg_binary", "wall_s")),
        "pipeline_duckdb_over_dlt": _div(_per_row(st, "pipeline_duckdb"), _per_row(st, "dlt_peer")),
        "dlt_over_pipeline_duckdb": _div(_per_row(st, "dlt_peer"), _per_row(st, "pipeline_duckdb")),
        "user_cli_over_user_raw_fetch": _div(_get(st, "user_cli", "wall_s"), _get(st, "user_raw_fetch", "wall_s")),
        # issue 17's target: the user's path <= 1.5x its raw fetch + 15 s (the orchestrator's start)
        "user_cli_minus_15s_over_user_raw_fetch": _div(_sub(_get(st, "user_cli", "wall_s"), 15.0),
                                                       _get(st, "user_raw_fetch", "wall_s")),
    }


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(res: dict[str, Any]) -> str:
    st = res["stages"]
    ds = res.get("dataset", {})
    render = ("pages rendered per request" if ds.get("per_request") else "pages streamed (rendered when asked, "
              "one ahead)" if ds.get("stream") else f"simulator pre-render {ds.get('prerender_s')} s")
    lines = [f"### {res['size']:,} dossiers ({ds.get('dossiers', 0):,} dossiers + {ds.get('payments', 0):,} "
             f"payment requests; {render})", "",
             "| stage | wall s | rows | rows/s | peak RSS MiB | breakdown (s) |", "|---|---:|---:|---:|---:|---|"]
    keys = ("catalogues_s", "fetch_wait_s", "normalize_s", "normalize_wait_s", "check_s", "gx_s", "load_s", "reports_s",
            "publish_s", "workbook_s")
    for name, s in st.items():
        if "error" in s:
            lines.append(f"| {name} | FAILED | | | | {s['error'][-120:]!r} |")
            continue
        wall, rows = s.get("wall_s"), s.get("rows")
        rate = rows / wall if rows and wall else None
        extra = ", ".join(f"{k[:-2]} {s[k]:.1f}" for k in keys if isinstance(s.get(k), (int, float)))
        if name == "user_cli":
            extra = (f"exit {s.get('exit_code')}; nightly run (dq.runs) {_fmt(s.get('flow_s'))}, outside it (CLI and "
                     f"Prefect start, exit) {_fmt(s.get('outside_flow_s'))}; peak RSS of the whole process tree, "
                     f"largest process {_fmt(s.get('largest_process_rss_mib'), 0)} MiB; PREFECT_HOME "
                     f"{s.get('prefect_home')}" + (f" beforehand in {_fmt(s.get('prefect_home_init_s'))} s (not "
                                                   "counted)" if s.get("prefect_home_init_s") else ""))
        if name in ("raw_fetch", "user_raw_fetch"):
            extra = f"{s['bytes'] / 2**20:,.0f} MiB in {s['pages']} pages ({s['bytes'] / 2**20 / wall:,.0f} MiB/s)"
        if s.get("load_s") and rows:
            extra += f"; load {rows / s['load_s']:,.0f} rows/s"
        if s.get("tree_peak_rss_mib") and s["tree_peak_rss_mib"] > (s.get("peak_rss_mib") or 0):
            extra += f"; with its worker processes (the tree, polled) {s['tree_peak_rss_mib']:,.0f} MiB"
        if len(s.get("runs_wall_s") or ()) > 1:
            extra += "; runs (interleaved) " + " / ".join(_fmt(w) for w in s["runs_wall_s"])
        lines.append(f"| {name} | {_fmt(wall)} | {_fmt(rows)} | {_fmt(rate, 0)} | {_fmt(s.get('peak_rss_mib'), 0)} "
                     f"| {extra} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v, 2)} |" for k, v in res["ratios"].items() if v is not None]
    return "\n".join(lines + comparison_lines(res))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--n", type=int, required=True)
        ap.add_argument("--seed", type=int, default=42)
        ap.add_argument("--per-request", action="store_true")
        a = ap.parse_args(argv[1:])
        serve(a.n, a.seed, a.per_request)
        return 0
    if argv[:1] == ["stage"]:
        if os.environ.get("BENCH_SQL_TIMES"):  # where a stage's SQL time goes (bench/sql_times.py)
            from bench.sql_times import install

            install(os.environ["BENCH_SQL_TIMES"], argv[1])
        _emit(STAGES[argv[1]](json.loads(argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,1000000", help="comma-separated dossier counts")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--changes", type=int, default=10_000, help="changed dossiers of the nightly stage")
    ap.add_argument("--no-pg", dest="pg", action="store_false", help="skip PostgreSQL stages")
    ap.add_argument("--no-dlt", dest="dlt", action="store_false", help="skip the dlt peer")
    ap.add_argument("--dlt-full-up-to", type=int, default=100_000,
                    help="above this size the dlt peer reads only the first --dlt-max-pages pages of each "
                         "endpoint and the comparison uses rows/s (it is slow and memory-hungry)")
    ap.add_argument("--dlt-max-pages", type=int, default=25)
    ap.add_argument("--no-nightly", dest="nightly", action="store_false", help="skip the nightly stage")
    ap.add_argument("--no-user-path", dest="user_path", action="store_false",
                    help="skip the user's path (dvc-etl run against a per-request simulator)")
    ap.add_argument("--cold-prefect", action="store_true",
                    help="user's path: a fresh PREFECT_HOME, so the run also creates Prefect's database (a "
                         "first run); by default it is created before the timed run, and timed apart")
    ap.add_argument("--stages", default="all",
                    help="'all' (default; the --no-* options apply), or 'user_path' for the user's path alone")
    ap.add_argument("--baseline-ref", metavar="REF",
                    help="also run the pipeline stage (DuckDB) of this commit or branch (the previous design: "
                         "a temporary git worktree), interleaved with the new one, and compare their report "
                         "and core tables")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the DuckDB pipeline stage (and the baseline's) this many times, interleaved")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat is at least 1")
    if args.stages not in ("all", "user_path"):
        ap.error("--stages is 'all' or 'user_path'")
    args.only_user_path = args.stages == "user_path"
    args.user_path = args.user_path or args.only_user_path
    if args.pg and not _pg_available():
        print(f"PostgreSQL not reachable at {PG_ADMIN}: skipping the PostgreSQL stages", file=sys.stderr)
        args.pg = False
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = []
    md = [f"# dvc-etl bench {stamp}", "", f"{os.cpu_count()} CPUs; page size {PAGE_SIZE}; "
          f"chunk {_default('chunk_records'):,} records; DuckDB memory limit {_default('duckdb_memory_limit')}", ""]
    with baseline_worktree(None if args.only_user_path else args.baseline_ref, ROOT) as args.baseline:
        if args.baseline:
            md += [f"Baseline (the previous design): `{args.baseline_ref}` = {args.baseline[1]}, its pipeline stage "
                   f"run from a git worktree, interleaved with the new one ({args.repeat} run(s) each)", ""]
        for n in [int(x) for x in args.sizes.split(",") if x]:
            res = bench_size(n, args)
            res["baseline_commit"] = args.baseline[1] if args.baseline else None
            results.append(res)
            text = table(res)
            print("\n" + text, flush=True)
            md += [text, ""]
            (OUT / f"bench-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
            (OUT / f"bench-{stamp}.md").write_text("\n".join(md))
    print(f"\nwritten: {OUT / f'bench-{stamp}.md'} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

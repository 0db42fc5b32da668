"""Files built once per test session and shared by its xdist workers (the migrated empty Prefect
database of ``tests/prefect_db.py``, the migrated empty warehouse of ``tests/warehouse_template.py``,
the reliability tests' uninterrupted run of ``tests/reliability_support.py``).

They live in pytest's base temporary folder of the session (every worker's ``popen-gwN`` folder is
inside it; pytest cleans it up), never kept from one session to the next. The first caller builds
the file under a lock, the others wait for it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's base temp folder is popen-gwN inside the session's folder
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """The session's file ``name``: ``build(work)`` makes it in an empty folder ``work`` and
    returns its path, the first time it is asked for; later callers (any worker) get it as built."""
    folder = session_folder(tmp_path_factory)
    done = folder / name
    with (folder / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            work = folder / f"{name}-build"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            os.replace(build(work), done)
            shutil.rmtree(work, ignore_errors=True)
    return done

"""``dvc-etl`` on a pseudo-terminal, as an operator sees it (and types into it)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

DVC_ETL = str(Path(sys.executable).with_name("dvc-etl"))


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 180,
               answers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """Run ``dvc-etl args`` with stdout and stderr on a pseudo-terminal; returns its exit code, what
    it showed, and the ``answers`` it never asked for. Without ``answers`` its stdin is empty; with
    them it is the terminal too: when ``(prompt, reply)``'s prompt has been shown, the reply is
    typed (in order). Fails the test when the command runs longer than ``timeout``."""
    pending = list(answers or [])
    main, secondary = pty.openpty()
    proc = subprocess.Popen([DVC_ETL, *args], stdin=secondary if answers is not None else subprocess.DEVNULL,
                            stdout=secondary, stderr=secondary, env=env, start_new_session=True)
    os.close(secondary)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    data = b""
                shown += data
                if not data and proc.poll() is not None:
                    break
                if pending and pending[0][0] in shown:
                    time.sleep(0.2)  # getpass has switched echo off before printing the prompt
                    os.write(main, pending.pop(0)[1])
            elif proc.poll() is not None:
                break
        else:
            pytest.fail("dvc-etl did not finish in time:\n" + shown.decode(errors="replace")[-3000:])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(main)
    return proc.returncode, shown.decode(errors="replace"), pending

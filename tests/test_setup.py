"""The two commands install everything themselves, from pinned versions (README "The two commands").

Static checks of the files a fresh machine runs: `make test` installs the system packages the tests
need (LibreOffice, the locales the workbook is rendered under), `.ci/run` adds nothing of its own,
and every package is pinned by requirements.lock at a version past the known advisories.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tasks.settings import PROJECT_ROOT


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (PROJECT_ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    pins = _lock()
    for req in _requirements("dev", "bench"):
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not in requirements.lock: run make lock"
        assert pins[name] in req.specifier, f"requirements.lock pins {req.name}=={pins[name]}, outside {req.specifier}"


def test_security_floors_are_past_the_known_advisories() -> None:
    floors = {"urllib3": "2.7.0", "requests": "2.32.4", "jinja2": "3.1.6", "h11": "0.16.0"}
    reqs = {re.sub(r"[-_.]+", "-", r.name).lower(): r for r in _requirements()}
    pins = _lock()
    for name, floor in floors.items():
        assert name in reqs, f"pyproject.toml sets no floor for {name}"
        below = _just_below(floor)
        assert not reqs[name].specifier.contains(below), f"pyproject.toml lets {name} {below} in (floor {floor})"
        assert pins[name] >= Version(floor), f"requirements.lock pins {name}=={pins[name]} < {floor}"


def _just_below(version: str) -> str:
    """A version just below ``version`` (2.7.0 -> 2.6.999): the floor must refuse it."""
    parts = [int(p) for p in version.split(".")]
    if parts[-1]:
        return ".".join(map(str, [*parts[:-1], parts[-1] - 1, 999]))
    return ".".join(map(str, [*parts[:-2], parts[-2] - 1, 999]))


def test_make_test_installs_from_the_lock_and_the_system_packages() -> None:
    """`make -n test` on this tree: what a fresh clone's `make test` would run."""
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test: .*\binstall\b.*\bsystem-deps\b", makefile, re.M), "make test must install system deps"
    assert "-c $(LOCK)" in makefile and "LOCK   := requirements.lock" in makefile
    assert "libreoffice-calc" in makefile and "locale-gen" in makefile
    out = subprocess.run(["make", "-n", "-B", "-C", str(PROJECT_ROOT), "test"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "apt-get install" in out and "-c requirements.lock" in out and "pytest" in out


def test_ci_runs_make_test_and_nothing_else() -> None:
    lines = [line.strip() for line in (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == "make test", lines
    assert not [line for line in lines if re.search(r"apt-get|\bpip3?\b|\bpython", line)], lines

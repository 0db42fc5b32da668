"""The docs match the code: ``docs/architecture.md`` names every module and only modules that
exist, and no file of the repository points at a file outside it (specifications are cited by
name: "the source contract", "the reports specification")."""

from __future__ import annotations

import re

from tasks.settings import PROJECT_ROOT

ARCHITECTURE = PROJECT_ROOT / "docs" / "architecture.md"
#: The packages whose every module the layout table names.
PACKAGES = ("tasks", "flows", "simulator", "bench")
#: Where a reference to a file outside the repository could hide.
SCANNED = ("tasks", "flows", "simulator", "bench", "sql", "expectations", "docs", "tests", "deploy", "reference")
SUFFIXES = {".py", ".sql", ".md", ".yaml", ".yml", ".json", ".toml", ".csv"}
OUTSIDE = re.compile(r"\.\./shared|\bshared/" + "spec")  # split: this file must not match itself


def _modules() -> list[str]:
    """Every module of the packages, as a path from the project root; an empty ``__init__.py``
    (a package marker) is not a module worth a row."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((PROJECT_ROOT / pkg).rglob("*.py")):
            if "__pycache__" in path.parts or "shipped" in path.parts:
                continue
            if path.name == "__init__.py" and not path.read_text(encoding="utf-8").strip():
                continue
            found.append(path.relative_to(PROJECT_ROOT).as_posix())
    return found


def _named_in_layout() -> set[str]:
    """The modules the first column of the layout table names."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    first_cells = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| `")]
    module = re.compile(rf"`((?:{'|'.join(PACKAGES)})/[\w/]+\.py)`")
    return {m for cell in first_cells for m in module.findall(cell)}


def test_layout_table_names_every_module() -> None:
    missing = [m for m in _modules() if m not in _named_in_layout()]
    assert not missing, f"docs/architecture.md's layout table does not name: {missing}"


def test_layout_table_names_no_module_that_is_gone() -> None:
    gone = sorted(m for m in _named_in_layout() if not (PROJECT_ROOT / m).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_no_reference_to_files_outside_the_repository() -> None:
    files = [PROJECT_ROOT / name for name in ("README.md", "prefect.yaml", "Makefile", "pyproject.toml")]
    for folder in SCANNED:
        files += [p for p in (PROJECT_ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()
                  and "__pycache__" not in p.parts and not p.is_relative_to(PROJECT_ROOT / "bench" / "out")]
    hits = []
    for path in files:
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(PROJECT_ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, "references to files outside the repository (cite the spec by name):\n" + "\n".join(hits)

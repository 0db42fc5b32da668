"""``dvc-etl quarantine list|export``: the open quarantine rows for the clerks who fix them.

The rows and files come from :mod:`tasks.quarantine` (no personal data, never the raw record).
Registered on the main app by ``tasks.cli`` as the ``quarantine`` group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tasks.cli_common import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE, console, fail, load_settings, parse_day

quarantine_app = typer.Typer(
    help="Rows held back by the data-quality checks (dq.quarantine), for the clerks who fix them at the source.",
    no_args_is_help=True,
)

_Unit = Annotated[str | None, typer.Option("--unit", help="Only this unit (MaDonVi).")]
_Since = Annotated[str | None, typer.Option("--since", help="Only rows first seen on or after this day (YYYY-MM-DD).")]
_Rule = Annotated[str | None, typer.Option("--rule", help="Only this rule (e.g. dossier_status_in_code_list).")]


def _rows(unit: str | None, since: str | None, rule: str | None) -> list[Any]:
    """The open rows under the filters; exit 4 when a run holds the DuckDB warehouse, 1 on another
    warehouse error (one line each)."""
    import sqlalchemy as sa

    from tasks.quarantine import open_rows
    from tasks.warehouse import WarehouseError, open_warehouse, upgrade

    day = parse_day(since, "--since")
    settings = load_settings()
    try:
        engine = open_warehouse(settings)
        try:
            upgrade(engine)
            return open_rows(engine, unit=unit, since=day, rule=rule)
        finally:
            engine.dispose()
    except (WarehouseError, sa.exc.SQLAlchemyError) as exc:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "Conflicting lock" in text:  # DuckDB: one process per file, and a run has it
            fail("the warehouse is in use by a run; try again when it has finished", EXIT_BUSY)
        fail(f"cannot read the quarantine: {text}", EXIT_FAILED)
    return []


def _print_table(rows: list[Any]) -> None:
    from rich.table import Table

    from tasks.quarantine import groups

    for (code, name), rules in groups(rows):
        total = sum(len(r) for _, r in rules)
        t = Table(title=f"{code or '-'} {name}: {total} bản ghi", title_justify="left", show_lines=False)
        for header in ("Quy tắc", "Mã hồ sơ", "Mã thanh toán / bản ghi", "Lý do", "Chi tiết", "Lần đầu", "Lần cuối"):
            t.add_column(header, overflow="fold")
        for i, (rule, items) in enumerate(rules):
            if i:
                t.add_section()
            for j, r in enumerate(items):
                other = r.ma_thanh_toan or (r.ma_ban_ghi if r.ma_ban_ghi != r.ma_ho_so else "")
                t.add_row(f"{rule} ({len(items)})" if j == 0 else "", r.ma_ho_so, other,
                          r.ly_do if j == 0 else "", r.chi_tiet, f"{r.first_seen_at:%Y-%m-%d %H:%M}",
                          f"{r.last_seen_at:%Y-%m-%d %H:%M}")
        console.print(t)


def _print_plain(rows: list[Any]) -> None:
    """Grouped plain text, one line per row: unit, then rule with its reason, then the rows
    (tab-separated: dossier code, payment or record code, first seen, last seen, detail)."""
    from tasks.quarantine import groups

    out = []
    for (code, name), rules in groups(rows):
        out.append(f"{code or '-'}\t{name}\t{sum(len(r) for _, r in rules)} bản ghi")
        for rule, items in rules:
            out.append(f"  {rule}\t{len(items)}\t{items[0].ly_do}")
            for r in items:
                other = r.ma_thanh_toan or (r.ma_ban_ghi if r.ma_ban_ghi != r.ma_ho_so else "")
                out.append(f"    {r.ma_ho_so or '-'}\t{other or '-'}\t{r.first_seen_at:%Y-%m-%d %H:%M}\t"
                           f"{r.last_seen_at:%Y-%m-%d %H:%M}\t{r.chi_tiet}")
    typer.echo("\n".join(out))


@quarantine_app.command("list")
def quarantine_list(unit: _Unit = None, since: _Since = None, rule: _Rule = None) -> None:
    """Print the open quarantine rows, grouped per unit and rule.

    Each row: dossier or payment code, Vietnamese reason, detail, first and last seen; no personal
    data. A table at a terminal, grouped plain text otherwise (tab-separated rows)."""
    rows = _rows(unit, since, rule)
    if not rows:
        typer.echo("Không có bản ghi nào bị giữ lại (no open quarantine rows).")
        return
    if console.is_terminal:
        _print_table(rows)
    else:
        _print_plain(rows)
    units = len({r.ma_don_vi for r in rows})
    typer.echo(f"{len(rows)} bản ghi bị giữ lại, {units} đơn vị. "
               "`dvc-etl quarantine export --out FILE.xlsx` ghi danh sách ra tệp.")


@quarantine_app.command("export")
def quarantine_export(
    out: Annotated[Path, typer.Option("--out", help="The file to write: .xlsx or .csv (by its extension).")],
    unit: _Unit = None, since: _Since = None, rule: _Rule = None,
) -> None:
    """Write the open quarantine rows to an .xlsx or .csv file, by its extension.

    One row per record and rule: unit, dossier or payment code, rule, Vietnamese reason, detail,
    first and last seen; no personal data. Any other extension: exit 2."""
    from tasks.quarantine import FORMATS, export

    if out.suffix.lower() not in FORMATS:
        fail(f"--out {out}: the file must end in .xlsx or .csv (got {out.suffix or 'no extension'!r})", EXIT_USAGE)
    rows = _rows(unit, since, rule)
    try:
        export(rows, out)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    typer.echo(f"{len(rows)} bản ghi -> {out}")

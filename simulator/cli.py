"""`dvc-etl simulate ...`: run the simulated provincial system or write clerk exports."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

# the simulator (numpy dataset, openpyxl exports) is imported by the commands that use it, so that
# every other `dvc-etl` command starts without it

simulate_app = typer.Typer(
    help="Simulator of the provincial one-stop system: HTTP API (source contract 1) and Excel/CSV exports (2).",
    no_args_is_help=True,
)


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be YYYY-MM-DD, got {value!r}") from exc


@simulate_app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free port (printed).")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Dataset seed.")] = 42,
    dossiers: Annotated[int, typer.Option(help="Number of dossiers.")] = 3000,
    start: Annotated[str, typer.Option(help="First receipt date (YYYY-MM-DD).")] = "2024-01-01",
    end: Annotated[str, typer.Option(help="Last receipt date (YYYY-MM-DD).")] = "2024-06-30",
    token: Annotated[str, typer.Option(help="Bearer token clients must send.")] = "sim-token",
    fault_rate: Annotated[float, typer.Option(help="Fraction of data requests that fail.")] = 0.0,
    slow_seconds: Annotated[float, typer.Option(help="Delay of a 'slow' fault.")] = 5.0,
    mutate_rate: Annotated[float, typer.Option(help="Records re-stamped per page read, as a fraction of page_size.")] = 0.0,
) -> None:
    """Serve the API until SIGTERM/SIGINT; prints `Simulator listening on <url>` once ready."""
    from simulator.dataset import generate
    from simulator.server import FaultConfig, serve_forever

    ds = generate(seed=seed, n_dossiers=dossiers, start=_date(start, "--start"), end=_date(end, "--end"))
    faults = FaultConfig(fault_rate=fault_rate, slow_seconds=slow_seconds, mutate_rate=mutate_rate, seed=seed)
    try:
        faults.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    def ready(url: str) -> None:
        print(f"Simulator listening on {url}", flush=True)

    serve_forever(ds, host=host, port=port, token=token, faults=faults, on_ready=ready)
    sys.stdout.flush()


@simulate_app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into.")],
    seed: Annotated[int, typer.Option(help="Dataset seed.")] = 42,
    dossiers: Annotated[int, typer.Option(help="Number of dossiers.")] = 3000,
    format: Annotated[str, typer.Option("--format", help="xlsx | csv | both")] = "both",  # noqa: A002 - option name
    layout: Annotated[str, typer.Option(help="plain | ugly | both")] = "both",
    limit: Annotated[int | None, typer.Option(help="Export at most this many records per entity.")] = None,
    flags: Annotated[bool | None, typer.Option(
        "--flags/--no-flags",
        help="Write the dossier flag columns (Thanh toán trực tuyến, Có kết quả điện tử, Tái sử dụng dữ liệu) "
             "in every file / in none; default: every file but dossiers_plain.csv.")] = None,
) -> None:
    """Write the clerk's Excel/CSV exports of dossiers and payments."""
    formats = {"xlsx": ("xlsx",), "csv": ("csv",), "both": ("xlsx", "csv")}
    layouts = {"plain": ("plain",), "ugly": ("ugly",), "both": ("plain", "ugly")}
    if format not in formats or layout not in layouts:
        raise typer.BadParameter("--format must be xlsx|csv|both and --layout plain|ugly|both")
    from simulator.dataset import generate
    from simulator.export import export_files

    ds = generate(seed=seed, n_dossiers=dossiers)
    for path in export_files(ds, out, formats=formats[format], layouts=layouts[layout], seed=seed, limit=limit,
                             flags=flags):
        print(path)

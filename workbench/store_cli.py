"""``workbench cache ls|du|clear [--kind K]``: what the store holds, how much space it takes, and removing it."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from workbench.store import KINDS, Store

cache_app = typer.Typer(help="The cache of every artifact (directions, calibrations, runs, SAEs, spectra ...).",
                        no_args_is_help=True)
console = Console()
_KIND = typer.Option(None, "--kind", help=f"Only this kind: {', '.join(KINDS)}.")


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def _table(store: Store, columns: tuple[str, ...]) -> Table:
    table = Table(title=f"cache at {store.root}")
    for column in columns:
        table.add_column(column)
    return table


@cache_app.command("ls")
def list_entries(kind: str | None = _KIND) -> None:
    """Every entry (of one kind): path, size, whether it is complete, when it was made."""
    store = Store()
    table = _table(store, ("kind", "entry", "size", "complete", "created"))
    for info in store.entries(kind):
        table.add_row(info.kind, str(info.path.relative_to(store.root / info.kind)), _size(info.bytes),
                      "yes" if info.ready else "no (interrupted)", info.created)
    console.print(table)


@cache_app.command("du")
def disk_usage(kind: str | None = _KIND) -> None:
    """Entries and bytes per kind."""
    store = Store()
    table = _table(store, ("kind", "version", "entries", "size", "what"))
    total = 0
    for name in [kind] if kind else list(KINDS):
        entries = store.entries(name)
        size = sum(info.bytes for info in entries)
        total += size
        table.add_row(name, str(KINDS[name].version), str(len(entries)), _size(size), KINDS[name].description)
    console.print(table)
    console.print(f"total {_size(total)}")


@cache_app.command("clear")
def clear(kind: str | None = _KIND,
          yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete every entry (of one kind). The model checkpoint is kept."""
    store = Store()
    what = f"every {kind} entry" if kind else "every cached artifact"
    if not yes and not typer.confirm(f"delete {what} under {store.root}?"):
        raise typer.Abort()
    console.print(f"freed {_size(store.clear(kind))}")


@cache_app.command("export")
def export(out: str = typer.Option(..., "--out", help="Archive to write (.tar.xz)."),
           kinds: list[str] = typer.Option(["runs", "calibrations"], "--kind",
                                           help=f"Kinds to export (repeat the option): {', '.join(KINDS)}.")) -> None:
    """Write the committed, verified entries of some kinds to one archive (e.g. a benchmark's runs and calibrations,
    to finish it on another machine)."""
    from workbench.store_archive import export_entries

    for name in kinds:
        if name not in KINDS:
            raise typer.BadParameter(f"unknown kind {name!r}; known: {', '.join(KINDS)}", param_hint="--kind")
    exported = export_entries(out, kinds)
    console.print(f"exported {len(exported)} entries ({', '.join(kinds)}) to {out}")


@cache_app.command("import")
def import_archive(archive: str = typer.Argument(..., help="An archive written by `workbench cache export`.")) -> None:
    """Add an exported archive's entries to the cache, each verified first (entries already present are kept)."""
    from workbench.store_archive import import_entries

    report = import_entries(archive)
    console.print(f"imported {len(report.added)} entries, {len(report.present)} already present, "
                  f"{len(report.refused)} refused into {Store().root}")
    for name, why in report.refused.items():
        console.print(f"[yellow]refused {name}: {why}[/yellow]")

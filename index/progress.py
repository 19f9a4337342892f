"""The one progress bar: rich, on stderr, hidden when disabled or not wanted; used by ingest, eval and synthesis."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool, label: str = "{task.description}", *, stats: bool = False, keep: bool = False) -> Any:
    """A `rich.progress.Progress` (a context manager) with label, bar, done/total and ETA; `stats` adds a
    `{task.fields[stats]}` column and elapsed time; `keep` leaves the finished bar on screen."""
    columns: list[Any] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if stats:
        columns += [TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA")]
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=not keep)

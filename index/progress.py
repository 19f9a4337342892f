"""The one progress bar helper: a rich bar on stderr that vanishes when done, or nothing when disabled."""

from __future__ import annotations

from typing import Any


def progress(enabled: bool) -> Any:
    """A `rich.progress.Progress` context on stderr (transient); `enabled=False` gives a silent one."""
    from rich.console import Console  # lazy: rich is only needed when a bar is drawn
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )

"""A progress bar for training (loss, validation BPB, bytes/s, ETA) that is nothing when disabled."""

from __future__ import annotations


class Progress:
    """A rich progress bar, or nothing when disabled / not a terminal."""

    def __init__(self, enabled: bool, total: float, desc: str):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn  # lazy: only on a terminal
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total, info="")

    def update(self, completed: float, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

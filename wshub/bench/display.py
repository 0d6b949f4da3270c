"""The live view of a running benchmark, on stderr (stdout stays for the result)."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from wshub.bench.run import Progress

__all__ = ["LiveView"]


class LiveView:
    """A rich ``Live`` panel fed with :class:`Progress` snapshots."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def update(self, p: Progress) -> None:
        table = Table.grid(padding=(0, 2))
        if p.phase == "connecting":
            bar = ProgressBar(total=max(1, p.receivers), completed=p.connected, width=30)
            table.add_row("connecting", bar, f"{p.connected}/{p.receivers} receivers")
        else:
            bar = ProgressBar(total=max(p.duration, 1e-9), completed=min(p.elapsed, p.duration))
            table.add_row(p.phase, bar, f"{p.elapsed:5.1f}/{p.duration:g} s")
            table.add_row(
                "",
                f"sent {p.sent:,}",
                f"delivered {p.delivered:,}  ({p.rate:,.0f}/s)  receivers {p.connected}",
            )
            if p.errors or p.closed:
                table.add_row("", f"[red]errors {p.errors}", f"[red]closed by server {p.closed}")
        self.live.update(table)

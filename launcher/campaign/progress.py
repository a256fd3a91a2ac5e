"""Live progress of a campaign and its final pass/fail table.

On a terminal a rich table updates in place; elsewhere (CI logs) one line per status change.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from launcher.campaign.execute import CellState

_STYLE = {"success": "green", "failed": "red", "partial": "yellow", "running": "cyan",
          "pending": "dim", "skipped": "dim"}


def cell_table(states: list[CellState], *, title: str = "") -> Table:
    t = Table(title=title or None, show_lines=False)
    for col in ("task", "submission", "gpu", "mode", "variant"):
        t.add_column(col, no_wrap=True)
    t.add_column("status", no_wrap=True, min_width=7)
    t.add_column("score", no_wrap=True)
    t.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=60)
    for st in states:
        c = st.cell
        detail = ""
        if st.status in ("failed", "partial"):
            detail = f"{st.failure_stage}: {' '.join((st.error or '').split())[:200]}"
        elif st.status == "running":
            detail = st.message[:80] or (st.build_url or "")
        elif st.resumed:
            detail = "(done before resume)"
        score = f"{st.score:.4g}" if st.score is not None else ""
        style = _STYLE.get(st.status, "")
        t.add_row(c.task, c.submission_name, c.gpu, c.mode, c.variant,
                  f"[{style}]{st.status}[/]" if style else st.status, score, detail)
    return t


def console(stream: TextIO | None = None) -> Console:
    """A console that keeps table rows on one line in CI logs too (rich assumes 80 columns)."""
    stream = stream or sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 200, soft_wrap=False)


def summary_line(states: list[CellState]) -> str:
    counts: dict[str, int] = {}
    for st in states:
        counts[st.status] = counts.get(st.status, 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    return f"{len(states)} cells: " + ", ".join(parts)


class Progress:
    """The ``on_change`` callback of a campaign (``with Progress(...) as p: campaign.on_change=p``)."""

    def __init__(self, states: list[CellState], *, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.states = states
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.console = console(self.stream)
        self.live: Live | None = None
        self.t0 = time.monotonic()
        self._last: dict[int, tuple[str, str]] = {}

    def __enter__(self) -> Progress:
        if self.tty and not self.quiet:
            self.live = Live(cell_table(self.states), console=self.console,
                             refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def __call__(self, st: CellState) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(cell_table(self.states))
            return
        key = (st.status, st.message if st.status == "running" else "")
        if self._last.get(st.attempt_id) == key:
            return
        self._last[st.attempt_id] = key
        c = st.cell
        what = st.status
        if st.status in ("failed", "partial"):
            what += f" ({st.failure_stage}: {(st.error or '')[:160]})"
        elif st.status == "running" and st.message:
            what += f": {st.message[:160]}"
        elif st.score is not None:
            what += f" score {st.score:.4g}"
        print(f"[{time.monotonic() - self.t0:7.1f}s] {c.task} {c.submission_name} {c.gpu} "
              f"{c.mode}/{c.variant}: {what}", file=self.stream, flush=True)

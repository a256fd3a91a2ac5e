"""Run a plan: every cell through a launcher, every attempt written to the store as it moves.

Each cell has one attempt row per try. A new run writes all its cells as ``pending`` first (the
plan is in the store before anything is submitted), then each attempt goes ``running`` (with its
build number / URL / agent as soon as the launcher reports them) and ends ``success``,
``failed`` or ``partial`` with the full result.json. A crash (even ``kill -9``) therefore leaves
``pending`` / ``running`` rows, never nothing.

Resume (``run_id`` of an earlier run): cells whose latest attempt is terminal are not run again;
a ``pending`` attempt is run as is; a ``running`` one whose Buildkite build number is known is
re-attached (followed to its result, never submitted again); any other unfinished attempt is
closed as ``partial`` (the process that ran it is gone) and the cell gets a new attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.result import FullResult
from launcher.base import StatusEvent, SubmitOptions, make_launcher
from launcher.campaign.outcome import INFRA_STAGE, TERMINAL, result_fields
from launcher.campaign.plan import Cell
from launcher.campaign.queries import latest_per_cell
from launcher.campaign.store import Store, now
from launcher.errors import InfraError, KitebenchError, UsageError

ABANDONED = "interrupted: the campaign process stopped before this attempt finished"


@dataclass
class CellState:
    """What the live table shows of one cell."""

    cell: Cell
    attempt_id: int
    status: str = "pending"
    failure_stage: str | None = None
    error: str | None = None
    score: float | None = None
    build_url: str | None = None
    message: str = ""
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    resumed: bool = False  #: terminal before this invocation (not run again)

    def to_json(self) -> dict[str, Any]:
        c = self.cell
        return {"key": c.key, "attempt_id": self.attempt_id, "task": c.task,
                "submission": c.submission, "submission_sha256": c.submission_sha256,
                "gpu": c.gpu, "mode": c.mode, "variant": c.variant, "status": self.status,
                "failure_stage": self.failure_stage, "error": self.error, "score": self.score,
                "build_url": self.build_url, "resumed": self.resumed}


@dataclass
class Campaign:
    store: Store
    cells: list[Cell]
    backend: str
    name: str = "matrix"
    parallel: int = 1
    run_id: str | None = None  #: set: resume that run
    matrix_json: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  #: SubmitOptions.extra for every cell
    timeout_s: float | None = None
    on_change: Callable[[CellState], None] | None = None
    #: builds the launcher of a cell (tests inject a Buildkite launcher on a stand-in)
    launcher_for: Callable[[Cell], Any] | None = None
    states: list[CellState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._todo: list[tuple[CellState, int | None]] | None = None
        self._launchers: dict[str, Any] = {}

    # -- public ----------------------------------------------------------------------------

    def run(self) -> list[CellState]:
        todo = self.prepare()
        try:
            fresh = [st for st, number in todo if number is None]
            batched = self.backend != "local" and all(
                hasattr(self._launcher(st.cell), "submit_many") for st in fresh)
            jobs: list[Callable[[], None]] = [
                (lambda st=st, n=n: self._run_cell(st, n))
                for st, n in todo if n is not None or not batched]
            if batched:  # every fresh cell in flight at once, one batched waiter per GPU
                groups: dict[str, list[CellState]] = {}
                for st in fresh:
                    groups.setdefault(st.cell.gpu, []).append(st)
                jobs += [(lambda g=g: self._run_batch(g)) for g in groups.values()]
            workers = len(jobs) if batched else self.parallel
            if len(jobs) == 1:
                jobs[0]()  # in this thread: Ctrl-C reaches the launcher (it cancels its builds)
            elif jobs:
                pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kb-cell")
                try:
                    futures = [pool.submit(job) for job in jobs]
                    for f in futures:
                        while not f.done():  # a short wait keeps Ctrl-C responsive
                            time.sleep(0.1)
                        f.result()
                finally:
                    # Ctrl-C: cells not started stay pending; those in flight finish their run
                    # but write nothing (they are partial now and rerun on resume)
                    pool.shutdown(wait=False, cancel_futures=True)
        except BaseException:
            self._stop.set()
            self._abandon()
            raise
        assert self.run_id is not None
        self.store.update_run(self.run_id, status=self.overall(), finished_at=now())
        return self.states

    def overall(self) -> str:
        if all(s.status == "success" for s in self.states):
            return "success"
        if any(s.status in ("pending", "running", "partial") for s in self.states):
            return "partial"
        return "failed"

    def exit_code(self) -> int:
        """0 every cell passed, 3 an infrastructure failure, else 1."""
        if all(s.status == "success" for s in self.states):
            return 0
        if any(s.exit_code == 3 or s.status in ("partial", "running", "pending")
               for s in self.states):
            return 3
        return 1

    # -- setup -----------------------------------------------------------------------------

    def prepare(self) -> list[tuple[CellState, int | None]]:
        """The states of every cell (written to the store), and the cells to run, each with the
        build number to re-attach to, if any. Sets ``run_id`` for a new run."""
        if self._todo is not None:
            return self._todo
        todo: list[tuple[CellState, int | None]] = []
        if self.run_id is None:
            self.run_id = self.store.create_run(name=self.name, kind="matrix",
                                                backend=self.backend, cells=len(self.cells),
                                                matrix_json=self.matrix_json)
            latest: dict[str, dict[str, Any]] = {}
        else:
            run = self.store.get_run(self.run_id)
            if run is None:
                raise UsageError(f"no run {self.run_id} in the store {self.store.url}")
            if run["backend"] != self.backend:
                raise UsageError(f"run {self.run_id} ran on the {run['backend']} backend; "
                                 f"resume it with --backend {run['backend']}")
            self.store.update_run(self.run_id, status="running", finished_at=None)
            latest = latest_per_cell(self.store.attempts(run_id=self.run_id))
        for cell in self.cells:
            row = latest.get(cell.key)
            if row is None:
                st = CellState(cell, self.store.add_attempt(**self._row(cell)))
                todo.append((st, None))
            elif row["status"] in TERMINAL:
                st = CellState(cell, row["id"], status=row["status"],
                               failure_stage=row["failure_stage"], error=row["error"],
                               score=row["score"], build_url=row["build_url"],
                               exit_code=row["exit_code"], resumed=True)
            elif row["status"] == "pending":
                st = CellState(cell, row["id"])
                todo.append((st, None))
            elif row["status"] == "running" and (number := self._build_of(cell, row)) is not None:
                st = CellState(cell, row["id"], status="running", build_url=row["build_url"])
                todo.append((st, number))
            else:
                if row["status"] == "running":
                    self.store.update_attempt(row["id"], status="partial",
                                              failure_stage="interrupted", error=ABANDONED,
                                              exit_code=3, finished_at=now())
                st = CellState(cell, self.store.add_attempt(**self._row(cell)))
                todo.append((st, None))
            self.states.append(st)
        self._todo = todo
        return todo

    def _build_of(self, cell: Cell, row: dict[str, Any]) -> int | None:
        """The build an unfinished attempt made: its stored number, else (killed before the
        number was stored) the build that carries the attempt's idempotency key."""
        if row["build_number"] is not None:
            return int(row["build_number"])
        if self.backend != "buildkite":
            return None
        number = self._launcher(cell).find(self._build_key(int(row["id"])))
        if number is not None:
            self.store.update_attempt(int(row["id"]), build_number=number)
        return number

    def _build_key(self, attempt_id: int) -> str:
        """The attempt's idempotency key on Buildkite (run ids are random: unique per org)."""
        return f"kitebench-{self.run_id}-{attempt_id}"

    def _row(self, cell: Cell) -> dict[str, Any]:
        return {"run_id": self.run_id, "cell_key": cell.key, "task": cell.task,
                "task_hash": cell.task_hash, "lang": cell.lang, "submission": cell.submission,
                "submission_sha256": cell.submission_sha256, "gpu": cell.gpu,
                "backend": self.backend, "mode": cell.mode, "variant": cell.variant}

    def _abandon(self) -> None:
        """Ctrl-C: attempts in flight become ``partial`` (a resume runs or re-attaches them)."""
        for st in self.states:
            if st.status == "running" and not st.build_url:
                self._set(st, status="partial", failure_stage="interrupted", error=ABANDONED,
                          exit_code=3, finished_at=now())
        if self.run_id is not None:
            self.store.update_run(self.run_id, status="partial", finished_at=now())

    def _launcher(self, cell: Cell) -> Any:
        """One launcher per GPU (a Buildkite launcher is a queue), built on first use."""
        with self._lock:
            if cell.gpu not in self._launchers:
                self._launchers[cell.gpu] = self.launcher_for(cell) if self.launcher_for \
                    else make_launcher(self._options(cell))
            return self._launchers[cell.gpu]

    # -- one cell --------------------------------------------------------------------------

    def _run_cell(self, st: CellState, reattach: int | None) -> None:
        if self._stop.is_set():
            return
        cell = st.cell
        st.started = time.monotonic()
        try:
            launcher = self._launcher(cell)
            self._set(st, status="running", started_at=now(),
                      queue=getattr(launcher, "queue", None))
            on_status = self._status_cb(st)
            if reattach is not None:
                result = launcher.wait(reattach, on_status=on_status, timeout_s=self.timeout_s)
            else:
                payload = payload_for(cell, self.backend, self.extra)
                result = launcher.run(payload, on_status=on_status, timeout_s=self.timeout_s)
        except UsageError as e:  # a cell whose payload cannot be built: its own failure
            self._finish(st, status="failed", failure_stage="validate", error=e.message,
                         exit_code=1)
        except KitebenchError as e:
            self._finish(st, status="failed", failure_stage=INFRA_STAGE, error=e.message,
                         exit_code=3)
        except Exception as e:  # failures are data: the next cells still run
            self._finish(st, status="failed", failure_stage="internal",
                         error=f"{type(e).__name__}: {e}", exit_code=3)
        else:
            self._finish_result(st, result)

    def _run_batch(self, group: list[CellState]) -> None:
        """Cells of one GPU through ``submit_many`` (one batched waiter for all their builds)."""
        launcher = self._launcher(group[0].cell)
        ready: list[tuple[CellState, Any]] = []
        for st in group:
            st.started = time.monotonic()
            try:
                ready.append((st, payload_for(st.cell, self.backend, self.extra)))
            except UsageError as e:
                self._finish(st, status="failed", failure_stage="validate", error=e.message,
                             exit_code=1)
        if not ready or self._stop.is_set():
            return
        for st, _ in ready:
            self._set(st, status="running", started_at=now(),
                      queue=getattr(launcher, "queue", None))
        callbacks = [self._status_cb(st) for st, _ in ready]

        def on_status(ev: StatusEvent) -> None:
            # each event names the payload of the batch it is about
            if ev.index is not None and 0 <= ev.index < len(callbacks):
                callbacks[ev.index](ev)

        try:
            results = launcher.submit_many([p for _, p in ready], on_status=on_status,
                                           timeout_s=self.timeout_s,
                                           ids=[self._build_key(st.attempt_id) for st, _ in ready])
        except KitebenchError as e:
            for st, _ in ready:
                self._finish(st, status="failed", failure_stage=INFRA_STAGE, error=e.message,
                             exit_code=3)
            return
        for (st, _), result in zip(ready, results, strict=True):
            self._finish_result(st, result)

    def _options(self, cell: Cell) -> SubmitOptions:
        return SubmitOptions(task_dir=Path(cell.task_dir), submission=Path(cell.submission),
                             mode=cell.mode, backend=self.backend,
                             gpu=None if self.backend == "local" else cell.gpu,
                             timeout_s=self.timeout_s, extra=dict(self.extra))

    def _status_cb(self, st: CellState) -> Callable[[StatusEvent], None]:
        seen: dict[str, Any] = {}

        def cb(ev: StatusEvent) -> None:
            facts = {"build_number": ev.build_number, "build_url": ev.url, "agent": ev.agent}
            new = {k: v for k, v in facts.items() if v is not None and seen.get(k) != v}
            if new:  # written once each: a resume needs the build number to re-attach
                seen.update(new)
                self.store.update_attempt(st.attempt_id, **new)
                st.build_url = seen.get("build_url")
            if ev.message:
                st.message = ev.message
                self._notify(st)

        return cb

    def _finish_result(self, st: CellState, result: FullResult) -> None:
        if self._stop.is_set():
            return  # interrupted meanwhile: the row says partial; a resume decides
        fields = result_fields(result)
        self._finish(st, **fields)

    def _finish(self, st: CellState, **values: Any) -> None:
        st.finished = time.monotonic()
        self._set(st, finished_at=now(), **values)

    def _set(self, st: CellState, **values: Any) -> None:
        self.store.update_attempt(st.attempt_id, **values)
        with self._lock:
            for k in ("status", "failure_stage", "error", "score", "exit_code"):
                if k in values:
                    setattr(st, k, values[k])
        self._notify(st)

    def _notify(self, st: CellState) -> None:
        if self.on_change is not None:
            with self._lock:
                self.on_change(st)


def payload_for(cell: Cell, backend: str, extra: dict[str, Any]) -> Any:
    """The payload of one cell: the task + submission, with the variant's overrides."""
    if cell.lang == "model":
        from launcher.model_task import build_model_payload, model_config_of

        overrides = dict(cell.overrides)
        if cell.model_config:
            cfg, _ = model_config_of(cell.task_dir)
            overrides["model_config"] = {**cfg, **cell.model_config}
        return build_model_payload(cell.task_dir, cell.submission, mode=cell.mode,
                                   archive_url=extra.get("archive_url"), overrides=overrides)
    from launcher.task import build_payload

    return build_payload(cell.task_dir, cell.submission, mode=cell.mode,
                         arch=extra.get("arch"), overrides=cell.overrides or None)


__all__ = ["Campaign", "CellState", "InfraError", "payload_for"]

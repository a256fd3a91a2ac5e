"""``kitebench submit``'s attempt in the results store: one run of kind ``submit`` with one
attempt, written before the job starts and completed when its result (or its failure) is in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.result import FullResult
from launcher.base import StatusCallback, StatusEvent, SubmitOptions
from launcher.campaign.matrix import LOCAL_GPU
from launcher.campaign.outcome import INFRA_STAGE, result_fields
from launcher.campaign.plan import Cell, sha256_file, task_hash
from launcher.campaign.store import Store, now
from launcher.errors import KitebenchError


class SubmitRecord:
    def __init__(self, store: Store, opts: SubmitOptions) -> None:
        from launcher.task import load_task

        self.store = store
        sub = opts.archive or opts.submission
        tdir = Path(opts.task_dir)
        backend = opts.backend or "local"
        cell = Cell(task=tdir.resolve().name, task_dir=str(tdir), task_hash=task_hash(tdir),
                    lang=load_task(tdir).lang, submission=str(sub) if sub else "",
                    submission_sha256=sha256_file(sub) if sub else "",
                    gpu=opts.gpu or (LOCAL_GPU if backend == "local" else opts.queue or ""),
                    mode=opts.mode, variant="default")
        self.run_id = store.create_run(name=f"submit {cell.task}", kind="submit",
                                       backend=backend, cells=1)
        self.attempt_id = store.add_attempt(
            run_id=self.run_id, cell_key=cell.key, task=cell.task, task_hash=cell.task_hash,
            lang=cell.lang, submission=cell.submission, submission_sha256=cell.submission_sha256,
            gpu=cell.gpu, queue=opts.queue, backend=backend, mode=cell.mode,
            variant=cell.variant, status="running", started_at=now())
        self._seen: dict[str, Any] = {}

    def wrap(self, on_status: StatusCallback | None) -> StatusCallback:
        """``on_status`` that also records the build number, URL and agent once each."""

        def cb(ev: StatusEvent) -> None:
            facts = {"build_number": ev.build_number, "build_url": ev.url, "agent": ev.agent}
            new = {k: v for k, v in facts.items() if v is not None and self._seen.get(k) != v}
            if new:
                self._seen.update(new)
                self.store.update_attempt(self.attempt_id, **new)
            if on_status is not None:
                on_status(ev)

        return cb

    def done(self, result: FullResult) -> None:
        fields = result_fields(result)
        self.store.update_attempt(self.attempt_id, finished_at=now(), **fields)
        self.store.update_run(self.run_id, status=fields["status"], finished_at=now())

    def failed(self, e: BaseException) -> None:
        msg = e.message if isinstance(e, KitebenchError) else f"{type(e).__name__}: {e}"
        interrupted = isinstance(e, KeyboardInterrupt)
        status = "partial" if interrupted else "failed"
        self.store.update_attempt(
            self.attempt_id, status=status, exit_code=3, finished_at=now(),
            failure_stage="interrupted" if interrupted else INFRA_STAGE, error=msg or "interrupted")
        self.store.update_run(self.run_id, status=status, finished_at=now())

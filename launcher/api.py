"""The Python API: ``submit()`` does what ``kitebench submit`` does and returns the result.

from launcher.api import submit

result = submit("examples/vectoradd_np", "examples/vectoradd_np/solutions/correct/submission.py")
print(result.passed, result.kitebench.score)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.payload import MODES
from contract.result import FullResult
from launcher.base import StatusCallback, SubmitOptions, default_backend, make_launcher
from launcher.errors import UsageError

_OPTION_FIELDS = ("archive", "gpu", "queue", "arch", "timeout_s", "gpus_file")


def options(
    task_dir: str | Path,
    submission: str | Path | None = None,
    *,
    mode: str = "test",
    backend: str | None = None,
    **opts: Any,
) -> SubmitOptions:
    """SubmitOptions from keyword options; unknown keys go to ``extra`` (e.g. ``isolation``)."""
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (expected one of: {', '.join(MODES)})")
    extra = dict(opts.pop("extra", None) or {})
    fields: dict[str, Any] = {}
    for key, value in opts.items():
        if key in _OPTION_FIELDS:
            fields[key] = value
        elif value is not None:
            extra[key] = value
    for key in ("archive", "gpus_file"):
        if fields.get(key) is not None:
            fields[key] = Path(fields[key])
    return SubmitOptions(
        task_dir=Path(task_dir),
        submission=Path(submission) if submission is not None else None,
        mode=mode,
        backend=backend,
        extra=extra,
        **fields,
    )


def build_payload_for(opts: SubmitOptions) -> Any:
    """The validated payload of a submission: kernel tasks from task.yml + the submitted file,
    model tasks from task.yml + the fork archive."""
    from launcher.task import build_payload, load_task

    task = load_task(opts.task_dir)
    if task.lang == "model":
        if opts.archive is None:
            raise UsageError(f"task {opts.task_dir} is a model task: give the fork with --archive")
        from launcher.model_task import build_model_payload

        return build_model_payload(
            task, opts.archive, mode=opts.mode, archive_url=opts.extra.get("archive_url")
        )
    if opts.archive is not None:
        raise UsageError(
            f"task {opts.task_dir} is a {task.lang} task: --archive is for model tasks"
        )
    return build_payload(task, opts.submission, mode=opts.mode, arch=opts.arch)


def submit_options(opts: SubmitOptions, *, on_status: StatusCallback | None = None) -> FullResult:
    payload = build_payload_for(opts)
    if opts.backend is None:
        opts.backend = default_backend()
    return make_launcher(opts).run(payload, on_status=on_status, timeout_s=opts.timeout_s)


def submit(
    task_dir: str | Path,
    submission: str | Path | None = None,
    *,
    mode: str = "test",
    backend: str | None = None,
    on_status: StatusCallback | None = None,
    **opts: Any,
) -> FullResult:
    """Run ``submission`` against the task in ``task_dir`` and return its result.

    Options: ``archive`` (model tasks), ``gpu``, ``queue``, ``arch``, ``timeout_s``,
    ``gpus_file``; anything else is backend-specific (``isolation="auto|docker|process"`` for the
    local backend). Raises :class:`launcher.errors.UsageError` for bad input and
    :class:`launcher.errors.InfraError` when the backend fails; a failing submission is a result.
    """
    opts_ = options(task_dir, submission, mode=mode, backend=backend, **opts)
    return submit_options(opts_, on_status=on_status)

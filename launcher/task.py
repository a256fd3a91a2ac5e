"""reference-kernels ``task.yml`` → payload.

A task dir holds ``task.yml`` with a ``files`` list (``@SUBMISSION@`` marks the submitted file,
other sources are paths relative to the task dir, ``../`` allowed), ``lang``, ``config``
(``main`` for py; ``sources``/``include_dirs``/``defines``/``compile_flags`` for cu), ``tests``,
``benchmarks``, timeouts and ``ranking_by``. Tasks written for gpu-mode/reference-kernels load
unmodified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contract import codec
from contract.payload import MODES
from launcher.errors import TaskError

SUBMISSION_MARK = "@SUBMISSION@"
_COMMON_KEYS = (
    "tests",
    "benchmarks",
    "test_timeout",
    "benchmark_timeout",
    "ranked_timeout",
    "ranking_by",
    "seed",
    "multi_gpu",
    "integrity",
)
#: task.yml keys that only describe the task (not sent to the runner).
_DESCRIPTIVE_KEYS = {"description", "templates", "gpus", "validation", "libraries"}


@dataclass
class Task:
    """A loaded task.yml: files resolved to text, except the submission slot."""

    path: Path
    lang: str
    files: dict[str, str]  # name → text, or SUBMISSION_MARK
    config: dict[str, Any]
    common: dict[str, Any]
    description: str = ""
    gpus: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def submission_name(self) -> str | None:
        return next((n for n, t in self.files.items() if t == SUBMISSION_MARK), None)


def load_task(task_dir: str | Path | Task) -> Task:
    """Read ``task_dir/task.yml`` (or a path to the yml itself); a loaded Task is returned as
    it is, so a caller that has one never reads the files twice."""
    if isinstance(task_dir, Task):
        return task_dir
    path = Path(task_dir)
    yml = path / "task.yml" if path.is_dir() else path
    if not yml.is_file():
        raise TaskError(f"no task.yml in {path}")
    try:
        raw = yaml.safe_load(yml.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TaskError(f"{yml}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise TaskError(f"{yml}: expected a mapping at the top level")
    root = yml.parent
    lang = raw.get("lang")
    if lang not in ("py", "cu", "model"):
        raise TaskError(f"{yml}: lang must be py, cu or model, got {lang!r}")

    files: dict[str, str] = {}
    for spec in raw.get("files") or []:
        if not isinstance(spec, dict) or "name" not in spec or "source" not in spec:
            raise TaskError(f"{yml}: each entry of files needs 'name' and 'source': {spec!r}")
        name, source = str(spec["name"]), str(spec["source"])
        if source == SUBMISSION_MARK:
            files[name] = SUBMISSION_MARK
            continue
        src = root / source
        try:
            files[name] = src.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TaskError(f"{yml}: file {source!r} (for {name!r}) not found") from None
        except UnicodeDecodeError:
            raise TaskError(f"{yml}: file {source!r} is not UTF-8 text") from None

    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise TaskError(f"{yml}: config must be a mapping")
    common = {k: raw[k] for k in _COMMON_KEYS if k in raw}
    return Task(
        path=root,
        lang=lang,
        files=files,
        config=config,
        common=common,
        description=str(raw.get("description") or ""),
        gpus=list(raw.get("gpus") or []),
        raw=raw,
    )


def read_submission(path: str | Path) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskError(f"submission {p} not found") from None
    except IsADirectoryError:
        raise TaskError(f"submission {p} is a directory, expected a file") from None
    except UnicodeDecodeError:
        raise TaskError(f"submission {p} is not UTF-8 text") from None


def build_config(
    task: Task,
    submission: str | None,
    *,
    mode: str = "test",
    arch: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The kernelbot-shaped run config (plain JSON data) of ``task`` + ``submission``."""
    if mode not in MODES:
        raise TaskError(f"unknown mode {mode!r} (expected one of: {', '.join(MODES)})")
    common: dict[str, Any] = {"lang": task.lang, "mode": mode, **task.common}
    if arch is not None:
        common["arch"] = arch
    if task.lang == "model":
        raise TaskError("model tasks take an archive: use the model path (kitebench submit --archive)")
    slot = task.submission_name
    if slot is not None and submission is None:
        raise TaskError(f"task {task.path} needs a submission for {slot!r}")
    files = {n: (submission if t == SUBMISSION_MARK else t) for n, t in task.files.items()}

    if task.lang == "py":
        main = task.config.get("main")
        if not main:
            raise TaskError(f"{task.path}/task.yml: config.main is required for lang py")
        config = {**common, "main": main, "sources": files}
    else:
        compiled = task.config.get("sources") or [n for n in files if n.endswith((".cu", ".cpp", ".cc"))]
        missing = [n for n in compiled if n not in files]
        if missing:
            raise TaskError(f"{task.path}/task.yml: config.sources names unknown files: {missing}")
        config = {
            **common,
            "sources": {n: files[n] for n in compiled},
            "headers": {n: t for n, t in files.items() if n not in compiled},
            "defines": task.config.get("defines") or {},
            "include_dirs": task.config.get("include_dirs") or [],
            "compile_flags": task.config.get("compile_flags") or [],
        }
        if task.raw.get("libraries"):
            config["libraries"] = list(task.raw["libraries"])
    config.update(overrides or {})
    return config


def build_payload(
    task_dir: str | Path | Task,
    submission_file: str | Path | None,
    *,
    mode: str = "test",
    arch: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Load a task dir and a submission file into a validated payload model."""
    task = load_task(task_dir)
    submission = read_submission(submission_file) if submission_file is not None else None
    config = build_config(task, submission, mode=mode, arch=arch, overrides=overrides)
    try:
        return codec.validate(config)
    except codec.PayloadError as e:
        raise TaskError(f"{task.path}: {e.message}") from None

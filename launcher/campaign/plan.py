"""Matrix → plan: the cells of a campaign, computed before anything runs.

A cell is one (task, submission, GPU, mode, variant). Its ``key`` is a digest of the task's
content, the submission's sha256 and the rest, so a resumed run recognises its cells even when
paths moved, and the same cells of two runs (``runs compare``) line up.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from launcher.campaign.matrix import DEFAULT_VARIANT, Matrix, Variant
from launcher.errors import UsageError


@dataclass(frozen=True)
class Cell:
    task: str  #: the task's name (its directory name)
    task_dir: str
    task_hash: str  #: sha256 over the task dir's files (a changed task is a different cell)
    lang: str
    submission: str  #: the submission's path as given/expanded
    submission_sha256: str
    gpu: str
    mode: str
    variant: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    model_config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        ident = [self.task, self.task_hash, self.submission_sha256, self.gpu, self.mode,
                 self.variant]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]

    @property
    def submission_name(self) -> str:
        return Path(self.submission).name

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **asdict(self)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def task_hash(task_dir: Path) -> str:
    """sha256 over task.yml and the files it references (reference-kernels tasks pull in ``../``
    files, so those count too); the submission slot is not part of the task."""
    from launcher.task import SUBMISSION_MARK, load_task

    task = load_task(task_dir)
    h = hashlib.sha256((task_dir / "task.yml").read_bytes())
    for name in sorted(task.files):
        text = task.files[name]
        if text != SUBMISSION_MARK:
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def _expand(matrix: Matrix, pattern: str) -> list[Path]:
    p = matrix.resolve(pattern)
    if any(ch in pattern for ch in "*?["):
        found = sorted(Path(x) for x in glob.glob(str(p), recursive=True))
        files = [x for x in found if x.is_file()]
        if not files:
            raise UsageError(f"submission glob {pattern!r} matches no file")
        return files
    if not p.is_file():
        raise UsageError(f"submission {pattern} not found")
    return [p]


def plan(matrix: Matrix) -> list[Cell]:
    """Every cell of the matrix, in file order, excludes applied, duplicates dropped."""
    from launcher.task import load_task

    cells: list[Cell] = []
    seen: set[str] = set()
    d = matrix.defaults
    hashes: dict[Path, tuple[str, str]] = {}
    for entry in matrix.entries:
        tdir = matrix.resolve(entry.task)
        if tdir not in hashes:
            lang = load_task(tdir).lang  # raises TaskError (a usage error) for a bad task
            hashes[tdir] = (task_hash(tdir), lang)
        thash, lang = hashes[tdir]
        subs: list[Path] = []
        for pattern in entry.submissions:
            subs.extend(x for x in _expand(matrix, pattern) if x not in subs)
        variants: list[Variant] = entry.variants or d.variants or [DEFAULT_VARIANT]
        seed = entry.secret_seed if entry.secret_seed is not None else d.secret_seed
        for sub in subs:
            digest = sha256_file(sub)
            for gpu in entry.gpus or d.gpus:
                for mode in entry.modes or d.modes:
                    for var in variants:
                        ident = {"task": str(entry.task), "submission": str(sub), "gpu": gpu,
                                 "mode": mode, "variant": var.name}
                        if any(x.matches(**ident) for x in [*entry.exclude, *matrix.exclude]):
                            continue
                        overrides = dict(var.overrides)
                        if mode == "private" and seed is not None:
                            overrides.setdefault("seed", seed)
                        cell = Cell(task=tdir.name, task_dir=str(tdir), task_hash=thash,
                                    lang=lang, submission=str(sub), submission_sha256=digest,
                                    gpu=gpu, mode=mode, variant=var.name, overrides=overrides,
                                    model_config=dict(var.model_config_overrides))
                        if cell.key not in seen:
                            seen.add(cell.key)
                            cells.append(cell)
    return cells

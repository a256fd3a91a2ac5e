"""The matrix file (``matrix.yml``): tasks × submissions × GPUs × modes × config variants.

    name: smoke
    defaults: {gpus: [local], modes: [test]}
    entries:
      - task: examples/vectoradd_np
        submissions: ["examples/vectoradd_np/solutions/*/*.py"]
        modes: [test, leaderboard]
        variants:
          - {name: seed7, overrides: {seed: 7}}
        exclude:
          - {submission: "*/wrong/*", mode: leaderboard}

Relative paths (task dirs, submission globs) resolve against the matrix file's directory when
they exist there, else against the current directory: a file kept next to its tasks and the
issue's minimal example run from a checkout both work as written.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.payload import Mode
from launcher.errors import UsageError

#: The GPU name of a cell when the matrix names none (the local backend runs it on this machine).
LOCAL_GPU = "local"


class _Strict(BaseModel):
    # a misspelt key in a campaign file should fail before hours of GPU time, not be ignored
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """A config variant: payload keys to override and, for model tasks, ``model_config`` keys."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    overrides: dict[str, Any] = Field(default_factory=dict)
    model_config_overrides: dict[str, Any] = Field(default_factory=dict, alias="model_config")

    @field_validator("overrides")
    @classmethod
    def _no_identity_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        # lang / mode / sources are the cell's identity; a variant may not change them
        bad = sorted(set(v) & {"lang", "mode", "sources", "files", "main", "model_config"})
        if bad:
            raise ValueError(f"a variant cannot override {', '.join(bad)}")
        return v


DEFAULT_VARIANT = Variant(name="default")


class Exclude(_Strict):
    """Cells to leave out: every given field must match (globs for ``submission`` and ``task``)."""

    task: str | None = None
    submission: str | None = None
    gpu: str | None = None
    mode: Mode | None = None
    variant: str | None = None

    def matches(self, *, task: str, submission: str, gpu: str, mode: str, variant: str) -> bool:
        checks = (
            (self.task, task, True), (self.submission, submission, True),
            (self.gpu, gpu, False), (self.mode, mode, False), (self.variant, variant, False),
        )
        for want, have, glob in checks:
            if want is None:
                continue
            if not (fnmatch.fnmatch(have, want) if glob else want == have):
                return False
        return True


class Defaults(_Strict):
    gpus: list[str] = Field(default_factory=lambda: [LOCAL_GPU], min_length=1)
    modes: list[Mode] = Field(default_factory=lambda: ["test"], min_length=1)
    variants: list[Variant] = Field(default_factory=list)
    #: ``private`` cells get this seed (a secret run: the public tests' seeds are known).
    secret_seed: int | None = None


class Entry(_Strict):
    """One task and what to run against it; unset fields come from ``defaults``."""

    task: str = Field(min_length=1)
    #: kernel tasks: source files or globs; model tasks: fork archives or globs
    submissions: list[str] = Field(min_length=1)
    gpus: list[str] | None = Field(default=None, min_length=1)
    modes: list[Mode] | None = Field(default=None, min_length=1)
    variants: list[Variant] | None = None
    exclude: list[Exclude] = Field(default_factory=list)
    secret_seed: int | None = None


class Matrix(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    entries: list[Entry] = Field(min_length=1)
    exclude: list[Exclude] = Field(default_factory=list)  #: applies to every entry

    #: where relative paths resolve first (set by :func:`load_matrix`; not a file key)
    _base: Path | None = None

    def resolve(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        if p.is_absolute() or self._base is None:
            return p
        here = self._base / p
        return here if _exists_or_matches(here) else p


def _exists_or_matches(p: Path) -> bool:
    if any(ch in str(p) for ch in "*?["):
        import glob

        return bool(glob.glob(str(p), recursive=True))
    return p.exists()


def matrix_json_schema() -> dict[str, Any]:
    schema = Matrix.model_json_schema(by_alias=True)
    schema["title"] = "kitebench matrix"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def parse_matrix(data: Any, *, base: Path | None = None, source: str = "matrix") -> Matrix:
    try:
        m = Matrix.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise UsageError(f"{source}: {where}: {first['msg']}{more}") from None
    m._base = base
    return m


def load_matrix(path: str | Path) -> Matrix:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"matrix file {p} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read matrix file {p}: {e}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_matrix(data, base=p.resolve().parent, source=str(p))

"""The GPU registry: GPU name → Buildkite queue, CUDA arch, vendor and agent tags.

One pydantic model, loaded from ``launcher/data/gpus.yml`` (shipped) merged with an optional user
file (``--gpus-file`` / ``KITEBENCH_GPUS_FILE``). The same data routes builds (queue), fills the
payload's arch and gives ``kitebench vendor render`` each GPU's queue, so nothing is typed twice.
``tags`` are descriptive only: an agent's tags come from the GPU it was provisioned for.

    reg = load_registry()
    reg.resolve("h100").queue     # "h100"; unknown names raise UsageError listing the known ones
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from launcher.errors import UsageError

ENV_VAR = "KITEBENCH_GPUS_FILE"
_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class GpuSpec(BaseModel):
    """One GPU kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    queue: str  #: Buildkite queue the agents of this GPU listen on (env GPU_QUEUE)
    arch: str | None = None  #: CUDA arch for nvcc, e.g. "90a" (None: not CUDA / detect)
    vendor: str = "nvidia"
    tags: dict[str, str] = Field(default_factory=dict)  #: extra agent tags

    @field_validator("queue")
    @classmethod
    def _queue_ok(cls, v: str) -> str:
        if not _QUEUE_RE.match(v):
            raise ValueError(f"queue {v!r} must be letters, digits, '-', '_' or '.'")
        return v

    @field_validator("arch", mode="before")
    @classmethod
    def _arch_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("arch")
    @classmethod
    def _arch_ok(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+[a-z]?", v):
            raise ValueError(f"arch must look like '80' or '90a', got {v!r}")
        return v


class GpuRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: dict[str, GpuSpec] = Field(default_factory=dict)

    def resolve(self, name: str) -> GpuSpec:
        """The GPU called ``name`` (case-insensitive); UsageError listing known names if none."""
        key = name.strip().lower()
        for n, spec in self.gpus.items():
            if n.lower() == key:
                return spec
        known = ", ".join(sorted(self.gpus)) or "none"
        raise UsageError(f"unknown GPU {name!r} (known: {known}; or pass --queue)")

    def by_queue(self, queue: str) -> GpuSpec | None:
        return next((g for g in self.gpus.values() if g.queue == queue), None)


def _read(path: Path | str, what: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8") if not isinstance(path, str) else path
        data = yaml.safe_load(text)
    except OSError as e:
        raise UsageError(f"{what}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{what}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("gpus", {}), dict):
        raise UsageError(f"{what}: expected a mapping with a 'gpus' mapping of name → spec")
    return data.get("gpus") or {}


def _specs(raw: dict[str, Any], what: str) -> dict[str, GpuSpec]:
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise UsageError(f"{what}: GPU {name!r} must be a mapping (queue, arch, vendor, tags)")
        try:
            out[str(name)] = GpuSpec(name=str(name), **{k: v for k, v in spec.items()
                                                         if k != "name"})
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            raise UsageError(f"{what}: GPU {name!r}: {loc}: {err['msg']}") from None
        except TypeError as e:
            raise UsageError(f"{what}: GPU {name!r}: {e}") from None
    return out


def load_registry(path: Path | None = None) -> GpuRegistry:
    """The shipped registry, with ``path`` (or $KITEBENCH_GPUS_FILE) merged over it: an entry
    there replaces the shipped one of the same name (case-insensitive); new names are added."""
    shipped = resources.files("launcher").joinpath("data/gpus.yml").read_text(encoding="utf-8")
    gpus = _specs(_read(shipped, "shipped gpus.yml"), "shipped gpus.yml")
    if path is None and os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    if path is not None:
        what = str(path)
        for name, spec in _specs(_read(Path(path), what), what).items():
            for old in [n for n in gpus if n.lower() == name.lower()]:
                del gpus[old]
            gpus[name] = spec
    return GpuRegistry(gpus=gpus)

"""The environment a submission process gets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import runner

#: Variables the submission must never see, besides every ``KITEBENCH_*`` and ``POPCORN_*`` one
#: (the runner sets the POPCORN ones itself).
_HIDDEN = {"SUBMISSION_PAYLOAD", "BUILDKITE_AGENT_ACCESS_TOKEN", "BUILDKITE_API_TOKEN"}
#: Any variable whose name holds one of these is a credential (the local backend passes the
#: user's whole environment: BUILDKITE_AGENT_TOKEN, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN...).
#: Whole words of the name (so TOKENIZERS_PARALLELISM is not one).
SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"}
SECRET_PARTS = ("ACCESS_KEY", "PRIVATE_KEY")


def is_secret(name: str) -> bool:
    upper = name.upper()
    return (
        name in _HIDDEN
        or bool(SECRET_WORDS & set(upper.split("_")))
        or any(p in upper for p in SECRET_PARTS)
    )


def child_env(
    env: Mapping[str, str], *, seed: int | None, gpus: int | None = None
) -> dict[str, str]:
    """The runner's env without the payload, the output dir or tokens, plus the field's
    ``POPCORN_SEED`` (a secret seed the harness mixes into every case's seed) and
    ``POPCORN_GPUS``. ``runner`` stays importable so task scripts can use ``runner.harness``."""
    out = {
        k: v
        for k, v in env.items()
        if not is_secret(k) and not k.startswith(("KITEBENCH_", "POPCORN_"))
    }
    if seed is not None:
        out["POPCORN_SEED"] = str(seed)
    if gpus is not None:
        out["POPCORN_GPUS"] = str(gpus)
    root = str(Path(runner.__file__).resolve().parent.parent)
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        parts.append(root)
    out["PYTHONPATH"] = os.pathsep.join(parts)
    # Unbuffered, so the output before a timeout kill is in the captured stdout.
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out

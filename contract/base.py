"""What both formats of the contract share: the contract's version, the extension key of
result.json, and the strict base model of the formats kitebench owns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

CONTRACT_VERSION = 1

#: The top-level key of result.json that holds kitebench-only facts.
EXTENSION_KEY = "kitebench"


class Strict(BaseModel):
    """Base for formats we own: unknown keys are errors, names can be set by alias or name.

    ``defer_build``: a model's validator is built the first time it is used, not at import
    (building every model of the contract took most of ``python -m runner``'s import time, and
    a kernel job never uses the model path's)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

"""What both formats of the contract share: the contract's version, the extension key of
result.json, and the strict base model of the formats kitebench owns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

CONTRACT_VERSION = 1

#: The top-level key of result.json that holds kitebench-only facts.
EXTENSION_KEY = "kitebench"


class Strict(BaseModel):
    """Base for formats we own: unknown keys are errors, names can be set by alias or name.

    ``defer_build``: a model's own validator is built the first time it is used, not when its
    class is made: many are only ever validated inside the payload union or ``FullResult``, and
    a kernel job never touches the model path's (about 5 % of ``python -m runner``'s start)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

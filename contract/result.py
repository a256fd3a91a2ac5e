"""The result: what the runner writes (``result.json``).

kernelbot's ``FullResult`` field for field (``success``, ``error``, ``system``, ``runs``) plus ONE
top-level extension key, ``kitebench`` (:class:`KitebenchInfo`), for facts kernelbot has no field
for. kernelbot builds every inner object with ``Cls(**dict)``, so nothing extra may appear inside
``system`` or a run; an extra top-level key is ignored by it. The JSON Schema (``kitebench schema
result``) is generated from these models.
"""

from __future__ import annotations

import datetime as _dt
import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract import __version__
from contract.base import CONTRACT_VERSION
from contract.base import Strict as _Strict


class RunnerExit(enum.IntEnum):
    """Exit codes of ``python -m runner`` (and of the local backend's ``kitebench submit``)."""

    PASSED = 0  #: every run passed
    FAILED = 1  #: the submission failed (a test, compile, gate or benchmark did not pass)
    BAD_PAYLOAD = 2  #: the payload could not be decoded or validated
    INTERNAL = 3  #: the runner or its environment failed (infrastructure; worth a retry)
    INTERRUPTED = 4  #: stopped by SIGTERM/SIGINT (e.g. a Buildkite cancel); partial result written


class HarnessExit(enum.IntEnum):
    """Exit codes the field's task harnesses use (kernelbot's ExitCode)."""

    SUCCESS = 0
    CUDA_FAIL = 110
    PIPE_FAILED = 111
    VALIDATE_FAIL = 112
    TEST_SPEC = 113
    TIMEOUT_EXPIRED = 114



# ---------------------------------------------------------------------------------------------
# Result (kernelbot FullResult, field names exactly)
# ---------------------------------------------------------------------------------------------


class SystemInfo(_Strict):
    gpu: str = ""
    device_count: int = 1
    cpu: str = ""
    runtime: str = ""
    platform: str = ""
    torch: str = ""
    hostname: str = ""


class CompileResult(_Strict):
    nvcc_found: bool
    nvcc_version: str = ""
    success: bool
    command: str = ""
    stdout: str = ""
    stderr: str = ""
    exit_code: int


class RunResult(_Strict):
    success: bool  #: exit code 0 or 112 (the harness ran to a verdict)
    passed: bool  #: ``result["check"] == "pass"``
    command: str = ""
    stdout: str = ""
    stderr: str = ""
    exit_code: int
    duration: float  #: wall time of the process in seconds (the timeout when it timed out)
    result: dict[str, str] = Field(default_factory=dict)


class ProfileResult(_Strict):
    profiler: str
    trace: str | None = None
    download_url: str | None = None


class EvalResult(_Strict):
    start: _dt.datetime
    end: _dt.datetime
    compilation: CompileResult | None = None
    run: RunResult | None = None
    profile: ProfileResult | None = None


Stage = Literal[
    "decode",  # the payload could not be read
    "validate",  # the payload did not match the contract
    "setup",  # work dir, files, environment
    "compile",
    "run",
    "install",  # model path: installing the fork
    "server_start",
    "perplexity",
    "benchmark",
    "audit",  # model path: the timed run's outputs disagree with the stock model's
    "collect",
    "container",  # host side: the container could not be run
    "publish",  # host side: artifact/meta-data/annotation
    "interrupted",
    "internal",
]


class Phase(_Strict):
    """One timed phase of a job (model path: install, server_start, ...; kernels: one per run)."""

    name: str
    start: _dt.datetime
    end: _dt.datetime | None = None
    duration_s: float | None = None
    success: bool | None = None
    detail: str = ""


class IntegrityCheck(_Strict):
    """One cross-check of the numbers a harness reported; a ``fail`` means not passed."""

    check: str
    verdict: Literal["pass", "warn", "fail"]
    detail: str = ""


class ScoreInfo(_Strict):
    """The meaning of ``kitebench.score``: metric name, unit, direction."""

    metric: str
    unit: str = ""
    #: True when lower is better (seconds, latencies); the leaderboard sorts ascending.
    ascending: bool

    def describe(self, value: float) -> str:
        """``request_throughput 92.73 req/s (higher is better)``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.unit == "s" and 0 < abs(value) < 1:  # kernel times: 2.5 µs, not 2.5e-06 s
            scale, unit = (1e3, " ms") if abs(value) >= 1e-3 else (1e6, " µs")
            value *= scale
        better = "lower" if self.ascending else "higher"
        return f"{self.metric} {value:.4g}{unit} ({better} is better)"


class KitebenchInfo(_Strict):
    """The ``kitebench`` extension key of result.json: facts kernelbot has no field for."""

    contract: int = CONTRACT_VERSION
    version: str = __version__
    #: Every run passed (what ``kitebench submit`` and the exit code 0 mean).
    passed: bool = False
    #: Where a failure happened (``None`` when the job ran to a verdict).
    stage: Stage | None = None
    #: The runner's exit code class (:class:`RunnerExit`).
    exit_code: int | None = None
    #: Set when SIGTERM/SIGINT stopped the job; the result holds what finished before.
    interrupted: bool = False
    #: Score in seconds (kernels: benchmark means combined by ranking_by) or the ranking metric.
    score: float | None = None
    phases: list[Phase] = Field(default_factory=list)
    #: Isolation facts recorded by the host wrapper (GPU UUID, cpuset, memory, image digest...).
    isolation: dict[str, Any] = Field(default_factory=dict)
    #: Path-specific extras (model path: perplexity, benchmark keys per shape, ...).
    details: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    #: Cross-checks of the harness's numbers (runner.kernels.integrity); any ``fail`` → not passed.
    integrity: list[IntegrityCheck] = Field(default_factory=list)
    #: What ``score`` is: ``{"metric", "unit", "ascending"}`` (ascending: lower is better), e.g.
    #: ``{"metric": "request_throughput", "unit": "req/s", "ascending": false}``.
    score_info: ScoreInfo | None = None


class FullResult(BaseModel):
    """result.json. ``success`` means the runner carried the job to a verdict (kernelbot's meaning);
    whether the submission passed is in each run and in ``kitebench.passed``."""

    # Unknown top-level keys are ignored, as kernelbot does; inner objects are strict.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    success: bool
    error: str = ""
    system: SystemInfo = Field(default_factory=SystemInfo)
    runs: dict[str, EvalResult] = Field(default_factory=dict)
    kitebench: KitebenchInfo = Field(default_factory=KitebenchInfo)

    @property
    def passed(self) -> bool:
        return self.success and self.kitebench.passed

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def failure(
        cls,
        error: str,
        stage: Stage,
        exit_code: RunnerExit = RunnerExit.INTERNAL,
        *,
        system: SystemInfo | None = None,
        runs: dict[str, EvalResult] | None = None,
        **info: Any,
    ) -> FullResult:
        """A failed result: what every failure path writes."""
        return cls(
            success=False,
            error=error,
            system=system or SystemInfo(),
            runs=runs or {},
            kitebench=KitebenchInfo(stage=stage, exit_code=int(exit_code), **info),
        )


def runs_passed(runs: dict[str, EvalResult]) -> bool:
    """True iff there is at least one run and every run compiled (if it compiles) and passed."""
    if not runs:
        return False
    for ev in runs.values():
        if ev.compilation is not None and not ev.compilation.success:
            return False
        if ev.run is None or not ev.run.passed:
            return False
    return True


def result_json_schema() -> dict[str, Any]:
    schema = FullResult.model_json_schema(mode="serialization", by_alias=True)
    schema["title"] = "kitebench result.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema

"""The payload: what the launcher sends the runner (``SUBMISSION_PAYLOAD``).

kernelbot's run config (``lang`` = ``py`` | ``cu`` | ``model``), a discriminated union on
``lang``. Unknown keys are rejected (``extra="forbid"``) so a misspelt key fails loudly instead of
silently running with a default. The JSON Schema (``kitebench schema payload``) is generated from
these models.
"""

from __future__ import annotations

import math
import posixpath
from typing import Annotated, Any, Literal, get_args

from pydantic import AliasChoices, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from contract.base import Strict as _Strict

# ---------------------------------------------------------------------------------------------
# Limits (documented in the README's contract reference)
# ---------------------------------------------------------------------------------------------

#: Total size of all source/header texts in one kernel payload.
MAX_SOURCES_BYTES = 8 * 1024 * 1024
#: Number of files in one kernel payload.
MAX_SOURCE_FILES = 256
#: Upper bound for any timeout in a payload (seconds).
MAX_TIMEOUT_S = 24 * 3600
#: Number of test or benchmark cases in one payload.
MAX_CASES = 10_000

Mode = Literal["test", "benchmark", "leaderboard", "private", "profile"]
Lang = Literal["py", "cu", "model"]
#: Derived from the types, so a mode or lang is named once.
MODES: tuple[str, ...] = get_args(Mode)
LANGS: tuple[str, ...] = get_args(Lang)
RankingBy = Literal["last", "mean", "geom", "custom"]

#: The field's default timeouts (seconds).
DEFAULT_TIMEOUT_S = 180
COMPILE_TIMEOUT_S = 120

Timeout = Annotated[int, Field(gt=0, le=MAX_TIMEOUT_S)]
CaseValue = int | float | str | bool
#: One test or benchmark case: ``{"size": 1024, "seed": 4242}`` (or a preformatted ``k: v; k: v``).
TestCase = dict[str, CaseValue] | str


# ---------------------------------------------------------------------------------------------
# Payload
# ---------------------------------------------------------------------------------------------


def _check_relative_name(name: str) -> str:
    """A file name from a payload must stay inside the work dir it is written to."""
    if not name or len(name) > 255:
        raise ValueError(f"file name must be 1..255 characters: {name[:60]!r}")
    if "\x00" in name or "\\" in name:
        raise ValueError(f"file name contains a NUL or backslash: {name!r}")
    if name.startswith("/"):
        raise ValueError(f"file name must be relative: {name!r}")
    norm = posixpath.normpath(name)
    if norm != name.rstrip("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"file name must be a plain relative path without '.'/'..': {name!r}")
    return name


class _CommonPayload(_Strict):
    """Keys every kernelbot payload carries."""

    mode: Mode = "test"
    tests: list[TestCase] = Field(default_factory=list, max_length=MAX_CASES)
    benchmarks: list[TestCase] = Field(default_factory=list, max_length=MAX_CASES)
    test_timeout: Timeout = DEFAULT_TIMEOUT_S
    benchmark_timeout: Timeout = DEFAULT_TIMEOUT_S
    ranked_timeout: Timeout = DEFAULT_TIMEOUT_S
    ranking_by: RankingBy = "last"
    seed: int | None = None
    multi_gpu: bool = False
    #: GPU architecture, e.g. ``"90a"`` or ``80``; ``None`` = detect (nvcc ``-arch=native``).
    arch: str | None = None

    @field_validator("arch", mode="before")
    @classmethod
    def _arch_to_str(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("arch must be a string like '90a' or an integer like 80")
        if isinstance(v, int):
            return str(v)
        return v

    @field_validator("arch")
    @classmethod
    def _arch_shape(cls, v: str | None) -> str | None:
        if v is not None and not (v[:-1].isdigit() if v[-1:].isalpha() else v.isdigit()):
            raise ValueError(f"arch must look like '80' or '90a', got {v!r}")
        return v

    @field_validator("tests", "benchmarks")
    @classmethod
    def _case_keys(cls, cases: list[TestCase]) -> list[TestCase]:
        for case in cases:
            text = case if isinstance(case, str) else "".join(f"{k}{v}" for k, v in case.items())
            if "\n" in text or "\r" in text:
                raise ValueError("a test/benchmark case must not contain a newline")
            if isinstance(case, dict):
                for k in case:
                    if not k or ":" in k or ";" in k:
                        raise ValueError(f"case key {k!r} must be non-empty without ':' or ';'")
        return cases

    def timeout_for(self, run: str) -> int:
        """The timeout (s) of one run: test / benchmark / leaderboard / profile.N."""
        if run == "test":
            return self.test_timeout
        if run == "leaderboard":
            return self.ranked_timeout
        return self.benchmark_timeout

    @property
    def total_timeout(self) -> int:
        """Upper bound of the runs' time for this payload's mode (compile and setup excluded)."""
        if self.mode in ("leaderboard", "private"):
            return self.test_timeout + self.benchmark_timeout + self.ranked_timeout
        if self.mode == "test":
            return self.test_timeout
        if self.mode == "profile":
            return self.benchmark_timeout * max(1, len(self.benchmarks))
        return self.benchmark_timeout


class IntegrityConfig(_Strict):
    """task.yml ``integrity:``: the cross-checks of a run's numbers (runner.kernels.integrity).
    A kitebench addition; every key is optional."""

    #: ``module:function`` the reference-ceiling shim submission calls.
    reference: str = Field(default="reference:ref_kernel", pattern=r"^[\w.]+:\w+$")
    #: Claimed speedup over the reference above which a ranked run fails / warns.
    ceiling: float = Field(default=100.0, gt=1)
    warn_ceiling: float = Field(default=10.0, gt=1)
    #: Bytes moved and flops done by one case, as arithmetic of the case's keys
    #: (``"3 * 4 * size"``); with a machine's peak rates they give a time no kernel can beat.
    bytes: str | None = Field(default=None, max_length=500)
    flops: str | None = Field(default=None, max_length=500)
    #: Run the reference-ceiling check (one extra benchmark run of the reference).
    reference_ceiling: bool = True
    #: Rerun the tests with a fresh secret seed after a ranked run.
    secret_recheck: bool = True


class _KernelPayload(_CommonPayload):
    #: File name → text. kernelbot sends ``sources``; the field's Buildkite guide sends ``files``.
    sources: dict[str, str] = Field(validation_alias=AliasChoices("sources", "files"))
    #: The cross-checks' settings (kitebench addition; defaults when absent).
    integrity: IntegrityConfig = Field(default_factory=IntegrityConfig)

    @field_validator("sources")
    @classmethod
    def _sources_ok(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_files(v)

    def _check_total(self, *groups: dict[str, str]) -> None:
        files = [name for g in groups for name in g]
        if len(files) > MAX_SOURCE_FILES:
            raise ValueError(f"{len(files)} files, more than the limit of {MAX_SOURCE_FILES}")
        dupes = {n for n in files if files.count(n) > 1}
        if dupes:
            raise ValueError(f"file names given twice: {sorted(dupes)}")
        total = sum(len(t.encode("utf-8", "surrogatepass")) for g in groups for t in g.values())
        if total > MAX_SOURCES_BYTES:
            raise ValueError(
                f"sources total {total / 2**20:.1f} MiB, over the limit of "
                f"{MAX_SOURCES_BYTES / 2**20:.0f} MiB"
            )


def _check_files(files: dict[str, str]) -> dict[str, str]:
    for name in files:
        _check_relative_name(name)
    return files


class PyPayload(_KernelPayload):
    """A Python submission: ``python <main> <mode> <cases>`` in a work dir holding ``sources``."""

    lang: Literal["py"]
    main: str = Field(min_length=1)

    @model_validator(mode="after")
    def _main_in_sources(self) -> PyPayload:
        if self.main not in self.sources:
            raise ValueError(f"main {self.main!r} is not one of the sources {sorted(self.sources)}")
        self._check_total(self.sources)
        return self


class CuPayload(_KernelPayload):
    """A CUDA submission: nvcc compiles ``sources`` (headers beside them) into ``eval.out``."""

    lang: Literal["cu"]
    headers: dict[str, str] = Field(default_factory=dict)
    defines: dict[str, str | None] = Field(default_factory=dict)
    include_dirs: list[str] = Field(default_factory=list)
    libraries: list[str] = Field(default_factory=list)
    compile_flags: list[str] = Field(default_factory=list)

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_files(v)

    @field_validator("defines")
    @classmethod
    def _defines_ok(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for name in v:
            if not name.isidentifier():
                raise ValueError(f"define {name!r} is not a C identifier")
        return v

    @field_validator("compile_flags")
    @classmethod
    def _flags_ok(cls, v: list[str]) -> list[str]:
        for flag in v:
            if not flag.startswith("-"):
                raise ValueError(f"compile flag {flag!r} must start with '-'")
        return v

    @field_validator("libraries")
    @classmethod
    def _libs_ok(cls, v: list[str]) -> list[str]:
        for lib in v:
            if not lib or not all(c.isalnum() or c in "_-+." for c in lib):
                raise ValueError(f"library name {lib!r} is not a plain library name")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> CuPayload:
        if not self.sources:
            raise ValueError("a cu payload needs at least one source to compile")
        self._check_total(self.sources, self.headers)
        return self


class BenchmarkShape(_Strict):
    num_prompts: int = Field(gt=0, le=100_000)
    input_len: int = Field(gt=0, le=1_000_000)
    output_len: int = Field(gt=0, le=1_000_000)


class ModelConfig(_Strict):
    """The ``model_config`` of a ``model`` payload (the field's keys, its defaults)."""

    model_name: str = Field(min_length=1)
    tensor_parallel: int = Field(default=1, ge=1, le=64)
    benchmark_shapes: list[BenchmarkShape] = Field(
        default_factory=lambda: [BenchmarkShape(num_prompts=100, input_len=512, output_len=128)],
        min_length=1,
    )
    ranking_metric: str = "request_throughput"
    perplexity_baseline: float | None = Field(default=None, gt=0)
    perplexity_tolerance: float = Field(default=0.02, ge=0, le=1)
    install_timeout: Timeout = 600
    server_startup_timeout: Timeout = 300
    benchmark_timeout: Timeout = 1200
    vllm_args: list[str] = Field(default_factory=list)
    # -- kitebench additions (not in the field's model_config; all optional) --
    #: Server argv template instead of the default OpenAI api_server module; placeholders
    #: ``{python} {model} {port} {host} {served_model_name} {tensor_parallel}``; vllm_args appended.
    server_command: list[str] | None = Field(default=None, min_length=1)
    #: Extra environment of the server process (e.g. ``VLLM_CPU_KVCACHE_SPACE``).
    server_env: dict[str, str] = Field(default_factory=dict)
    #: argv prefix that acts as ``vllm bench serve`` (placeholder ``{python}``); default: the kit's
    #: driver of the installed vLLM's bench module.
    bench_command: list[str] | None = Field(default=None, min_length=1)
    #: Held-out text for the perplexity gate (``None``: the kit's default corpus).
    perplexity_corpus: str | None = Field(default=None, max_length=8 * 1024 * 1024)
    #: Documents longer than this many characters are split (keep them under max-model-len).
    perplexity_chunk_chars: int = Field(default=2000, ge=64, le=1_000_000)
    #: Caps on the fork archive: its own size, and its extracted files and bytes (bomb guard).
    max_archive_bytes: int = Field(default=256 * 2**20, gt=0)
    max_extract_files: int = Field(default=20_000, gt=0)
    max_extract_bytes: int = Field(default=1024 * 2**20, gt=0)
    # -- the audit of the timed run (runner/model/audit.py) --
    #: Prompts per shape whose outputs are compared with stock vLLM's greedy outputs (chosen with
    #: a secret the fork never sees). 16 catches a fork that is wrong on 1 request in 8 with
    #: probability 1 - (7/8)^16 = 88 % per shape; every request's token count is checked anyway.
    audit_prompts: int = Field(default=16, ge=0, le=10_000)
    #: Where the fork's greedy output first differs from stock's, the difference is a numeric
    #: near-tie (not a disagreement) when stock's logprob of the fork's token is within this many
    #: nats of its own choice: the same weights agree token for token except where batching or
    #: kernel order moves a logit by ~1e-2; a real difference in the model is far wider.
    audit_tie_nats: float = Field(default=0.25, ge=0, le=10)
    #: Sampled prompts that may disagree (beyond near-ties). 0: a greedy disagreement on the same
    #: weights is never numerics, so one is evidence enough.
    audit_max_disagreeing: int = Field(default=0, ge=0)
    #: After a near-tie the rest cannot be compared; at least this share of the sampled output
    #: tokens must be compared, so "real until the first tie, garbage after" does not pass.
    audit_min_compared: float = Field(default=0.5, ge=0, le=1)

    @field_validator("perplexity_baseline")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("perplexity_baseline must be finite")
        return v


class ModelPayload(_CommonPayload):
    """A vLLM fork to benchmark: an archive (inline, by URL, or a local path) + ``model_config``."""

    lang: Literal["model"]
    #: base64 of a .tar.gz/.tgz/.zip holding ``<dir>/vllm/...``.
    submission_archive: str | None = None
    #: Where to download the archive when it is too big to travel inline.
    archive_url: str | None = None
    #: Hex SHA-256 of the archive; required with ``archive_url``.
    archive_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    #: A path on the machine that runs the job (local backend only).
    archive_path: str | None = None
    # ``model_config`` is pydantic's own attribute name, so the field is renamed and aliased.
    model_cfg: ModelConfig = Field(alias="model_config")

    @model_validator(mode="after")
    def _one_archive(self) -> ModelPayload:
        given = [
            k for k in ("submission_archive", "archive_url", "archive_path") if getattr(self, k)
        ]
        if len(given) != 1:
            raise ValueError(
                "exactly one of submission_archive, archive_url, archive_path is required"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.archive_url and not self.archive_sha256:
            raise ValueError("archive_url needs archive_sha256")
        if self.archive_url and not self.archive_url.startswith(("https://", "http://")):
            raise ValueError("archive_url must be an http(s) URL")
        if self.mode == "profile":
            raise ValueError("mode 'profile' is not supported for lang 'model'")
        return self


#: Any payload, as a type (what a launcher or the runner is handed once it is validated).
AnyPayload = PyPayload | CuPayload | ModelPayload
#: The same union for pydantic: discriminated by ``lang``.
Payload = Annotated[AnyPayload, Field(discriminator="lang")]
KernelPayload = PyPayload | CuPayload
#: The union's adapter, for the JSON Schema; built when first used (the runner never needs it).
payload_adapter: TypeAdapter[AnyPayload] = TypeAdapter(Payload, config=ConfigDict(defer_build=True))
#: lang → its model (from each model's ``lang`` type): validating one payload builds only its own.
MODEL_FOR_LANG: dict[str, type[PyPayload | CuPayload | ModelPayload]] = {
    get_args(m.model_fields["lang"].annotation)[0]: m for m in (PyPayload, CuPayload, ModelPayload)
}


def runs_for_mode(mode: str, n_benchmarks: int = 1) -> list[str]:
    """The run names of a mode, in order; each runs only if the previous one passed."""
    if mode in ("leaderboard", "private"):
        return ["test", "benchmark", "leaderboard"]
    if mode == "profile":
        return [f"profile.{i}" for i in range(max(1, n_benchmarks))]
    return [mode]


def dump_payload(payload: PyPayload | CuPayload | ModelPayload) -> dict[str, Any]:
    """The payload as kernelbot-shaped JSON data (wire names, defaults included)."""
    return payload.model_dump(mode="json", by_alias=True)


def payload_json_schema() -> dict[str, Any]:
    schema = payload_adapter.json_schema(mode="validation", by_alias=True)
    schema["title"] = "kitebench payload"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema

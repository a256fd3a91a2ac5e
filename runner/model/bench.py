"""The serving benchmark: ``vllm bench serve`` once per shape, every scalar key kept, one score.

The benchmark CLIENT runs with the installed (stock) vLLM, never the fork's code: a fork must
not measure itself. Flags are explicit (random dataset of the shape's lengths, temperature 0, a
seed, ``--ignore-eos`` so every request produces the shape's output length, one result dir per
shape), so two runs of the same shape are comparable.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from contract import ranking
from contract.payload import BenchmarkShape
from contract.result import ScoreInfo
from runner.model.util import StageError, tail, tail_file

DRIVER = Path(__file__).with_name("bench_driver.py")
#: Metrics where lower is better (latencies); everything else ranks higher-is-better.
LOWER_IS_BETTER_SUFFIXES = ("_ms", "_s")
LOWER_IS_BETTER = {"duration", "failed"}


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER or metric.endswith(LOWER_IS_BETTER_SUFFIXES)


def score_info(metric: str) -> ScoreInfo:
    """What a bench metric's value is: unit and direction, for result.json and the report."""
    if metric.endswith("_ms"):
        unit = "ms"
    elif metric.endswith("_s") or metric == "duration":
        unit = "s"
    elif metric in ("request_throughput", "request_goodput"):
        unit = "req/s"
    elif metric.endswith("_throughput") or metric.endswith("_tokens_per_s"):
        unit = "tok/s"
    else:
        unit = ""
    return ScoreInfo(metric=metric, unit=unit, ascending=lower_is_better(metric))


def scalar_keys(data: dict) -> dict[str, int | float | str | bool | None]:
    """Every scalar (non-list, non-dict) key of a bench result JSON."""
    return {k: v for k, v in data.items() if v is None or isinstance(v, int | float | str | bool)}


@dataclass
class ShapeResult:
    index: int
    shape: BenchmarkShape
    keys: dict[str, int | float | str | bool | None]
    command: list[str]
    duration_s: float
    result_file: Path
    log: Path
    lists: dict[str, int] = field(default_factory=dict)  #: list keys → their length
    #: the trusted client's per-request records (bench_driver.py --record), for the audit
    records: Path | None = None

    @property
    def spec(self) -> str:
        s = self.shape
        return f"num_prompts: {s.num_prompts}; input_len: {s.input_len}; output_len: {s.output_len}"


def bench_argv(
    prefix: list[str],
    *,
    base_url: str,
    model: str,
    tokenizer: str,
    shape: BenchmarkShape,
    seed: int,
    result_dir: Path,
    result_name: str,
) -> list[str]:
    return [
        *prefix,
        "--backend",
        "openai",
        "--endpoint",
        "/v1/completions",
        "--base-url",
        base_url,
        "--model",
        model,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(shape.input_len),
        "--random-output-len",
        str(shape.output_len),
        "--num-prompts",
        str(shape.num_prompts),
        "--temperature",
        "0",
        "--seed",
        str(seed),
        "--ignore-eos",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        result_name,
    ]


def default_prefix(python: str, command: list[str] | None) -> list[str]:
    if command:
        return [part.replace("{python}", python) for part in command]
    return [python, str(DRIVER)]


def run_shape(
    index: int,
    shape: BenchmarkShape,
    *,
    prefix: list[str],
    base_url: str,
    model: str,
    tokenizer: str,
    seed: int,
    out_dir: Path,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    record: bool = False,
) -> ShapeResult:
    """One ``vllm bench serve``; raise StageError("benchmark") with the log tail on failure.
    ``record``: the kit's driver keeps every request's output tokens (requests.jsonl)."""
    shape_dir = out_dir / f"shape-{index}"
    shape_dir.mkdir(parents=True, exist_ok=True)
    name = "result.json"
    records = shape_dir / "requests.jsonl" if record else None
    argv = bench_argv(
        [*prefix, "--record", str(records)] if records else prefix,
        base_url=base_url,
        model=model,
        tokenizer=tokenizer,
        shape=shape,
        seed=seed,
        result_dir=shape_dir,
        result_name=name,
    )
    log = shape_dir / "bench.log"
    t0 = time.monotonic()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise StageError(
                "benchmark",
                f"shape {index} ({shape.num_prompts} prompts) did not finish "
                f"within {timeout:.0f} s; bench log tail:\n{tail_file(log)}",
            ) from None
        finally:
            if proc.poll() is None:  # interrupted: do not leave the client behind
                _kill(proc)
    took = time.monotonic() - t0
    if code != 0:
        raise StageError(
            "benchmark",
            f"vllm bench serve failed for shape {index} (exit code {code}); "
            f"bench log tail:\n{tail_file(log)}",
        )
    path = shape_dir / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StageError(
            "benchmark",
            f"shape {index}: no usable result file {name} ({e}); bench log tail:\n{tail_file(log)}",
        ) from None
    if not isinstance(data, dict):
        raise StageError("benchmark", f"shape {index}: the result file is not a JSON object")
    keys = scalar_keys(data)
    lists = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    return ShapeResult(index, shape, keys, argv, took, path, log, lists, records)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    import os
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def check_complete(r: ShapeResult) -> None:
    """Every request must have completed: failed requests would distort latency rankings."""
    completed, failed = r.keys.get("completed"), r.keys.get("failed")
    if failed not in (None, 0) or (isinstance(completed, int) and completed != r.shape.num_prompts):
        raise StageError(
            "benchmark",
            f"shape {r.index}: {completed} of {r.shape.num_prompts} requests "
            f"completed, {failed} failed; bench log tail:\n{tail(tail_file(r.log), 15)}",
        )


def metric_of(r: ShapeResult, metric: str) -> float:
    value = r.keys.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        numeric = sorted(
            k for k, v in r.keys.items() if isinstance(v, int | float) and not isinstance(v, bool)
        )
        raise StageError(
            "benchmark",
            f"ranking metric {metric!r} is not a finite number in the results "
            f"of shape {r.index} (got {value!r}); numeric keys: {', '.join(numeric)}",
        )
    return float(value)


def combine(values: list[float], ranking_by: str) -> float:
    """Shapes → one score (:func:`contract.ranking.combine`; ``custom`` means ``last`` here:
    the benchmark client has no score of its own)."""
    score = ranking.combine(values, "last" if ranking_by == "custom" else ranking_by)
    if score is None:
        raise StageError("benchmark", "the ranking metric is not a positive number in every "
                                      f"shape ({values}): no score")
    return score


def result_strings(results: list[ShapeResult]) -> dict[str, str]:
    """The field's ``run.result`` (strings only): ``benchmark.{i}.{key}`` per scalar key, plus the
    field's ``benchmark-count`` and ``benchmark.{i}.spec|status``."""
    out = {"benchmark-count": str(len(results))}
    for r in results:
        out[f"benchmark.{r.index}.spec"] = r.spec
        out[f"benchmark.{r.index}.status"] = "pass"  # the field's key: this shape ran to the end
        for k, v in r.keys.items():
            out[f"benchmark.{r.index}.{k}"] = "" if v is None else str(v)
    return out

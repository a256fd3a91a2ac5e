"""The model job's runs: the perplexity gate and the timed benchmark of one run.
A mixin of :class:`runner.model.job.ModelJob` (the job's state lives there)."""

from __future__ import annotations

import shlex
import time
from typing import Any

from contract.payload import runs_for_mode
from contract.result import EvalResult
from runner.model import bench, perplexity
from runner.model.audit_job import Audited
from runner.model.util import StageError, eval_result


class RunSteps:
    def _gate(self, run: str, start: Any) -> EvalResult:
        assert self.server is not None
        text = self.cfg.perplexity_corpus or perplexity.default_corpus()
        docs = perplexity.documents(text, self.cfg.perplexity_chunk_chars)
        timeout = self.p.test_timeout
        cmd = (
            f"perplexity gate: POST {self.server.base_url}/v1/completions echo+logprobs, "
            f"{len(docs)} documents"
        )
        t0 = time.monotonic()
        with self._phase("perplexity", f"run {run}") as ph:
            try:
                measured = perplexity.measure(
                    self.server.base_url, self.cfg.model_name, docs, timeout=timeout
                )
            except perplexity.GateError as e:
                ph.fail(str(e))
                result = eval_result(
                    start, False, cmd, {"check": "fail"}, stderr=str(e), exit_code=112, t0=t0
                )
                self.details["perplexity"] = {"error": str(e), "documents": len(docs)}
                self.runs[run] = result
                raise StageError("perplexity", f"perplexity gate failed: {e}") from None
            verdict = perplexity.judge(
                measured, self.cfg.perplexity_baseline, self.cfg.perplexity_tolerance
            )
            self.details["perplexity"] = {
                **verdict.as_dict(),
                "sum_logprob": measured.sum_logprob,
                "corpus": "task" if self.cfg.perplexity_corpus else "default",
            }
            if not verdict.gated:
                self.warnings.append(
                    "perplexity_baseline is not set: the gate checked the answers' "
                    "validity but did not compare the perplexity"
                )
            keys = {
                "check": "pass" if verdict.passed else "fail",
                "perplexity": repr(verdict.measured),
                "perplexity.baseline": "" if verdict.baseline is None else repr(verdict.baseline),
                "perplexity.tolerance": repr(verdict.tolerance),
                "perplexity.relative_deviation": ""
                if verdict.relative_deviation is None
                else repr(verdict.relative_deviation),
                "perplexity.tokens": str(verdict.tokens),
                "perplexity.documents": str(verdict.documents),
            }
            ph.detail = verdict.message()
            if not verdict.passed:
                ph.fail(verdict.message())
                result = eval_result(
                    start, False, cmd, keys, stdout=verdict.message(), exit_code=112, t0=t0
                )
                self.runs[run] = result
                raise StageError("perplexity", f"perplexity gate failed: {verdict.message()}")
        return eval_result(start, True, cmd, keys, stdout=verdict.message(), exit_code=0, t0=t0)

    def _benchmark(self, run: str, start: Any, gate_keys: dict[str, str]) -> EvalResult:
        assert self.server is not None and self.installed is not None
        prefix = bench.default_prefix(self.python, self.cfg.bench_command)
        out_dir = self.work / "bench" / run
        tokenizer = self.details.get("server", {}).get("model", self.cfg.model_name)
        deadline = time.monotonic() + self.cfg.benchmark_timeout
        t0 = time.monotonic()
        results: list[bench.ShapeResult] = []
        seed = self._run_seed(run)
        # The audit needs the kit's own client; a task's bench_command is trusted but unaudited.
        record = self.cfg.bench_command is None
        with self._phase("benchmark", f"run {run}") as ph:
            try:
                for i, shape in enumerate(self.cfg.benchmark_shapes):
                    r = bench.run_shape(
                        i,
                        shape,
                        prefix=prefix,
                        base_url=self.server.base_url,
                        model=self.cfg.model_name,
                        tokenizer=tokenizer,
                        seed=seed,
                        out_dir=out_dir,
                        env=dict(self.client_env),
                        cwd=self.work / "client",
                        timeout=deadline - time.monotonic(),
                        record=record,
                    )
                    bench.check_complete(r)
                    results.append(r)
                values = [bench.metric_of(r, self.cfg.ranking_metric) for r in results]
                score = bench.combine(values, self.p.ranking_by)
            except StageError as e:
                ph.fail(e.message.splitlines()[0])
                keys = {**gate_keys, "check": "fail", **bench.result_strings(results)}
                self.runs[run] = eval_result(
                    start, False, "vllm bench serve", keys, stderr=e.message, exit_code=1, t0=t0
                )
                self._record_bench(run, results)
                raise
            ph.detail = f"{len(results)} shape(s), {self.cfg.ranking_metric} = {score:.6g}"
        self._record_bench(run, results)
        if record:
            self.to_audit.append(Audited(run, seed, results))
        elif run == runs_for_mode(self.p.mode)[-1]:
            self.warnings.append("bench_command is set: the timed run's outputs were not audited")
        self.score = score
        self.details["ranking_metric"] = self.cfg.ranking_metric
        self.details["ranking_by"] = self.p.ranking_by
        self.details["higher_is_better"] = not bench.lower_is_better(self.cfg.ranking_metric)
        keys = {
            **gate_keys,
            "check": "pass",
            **bench.result_strings(results),
            "score": repr(score),
            "ranking_metric": self.cfg.ranking_metric,
        }
        summary = "; ".join(
            f"shape {r.index} ({r.spec}): {self.cfg.ranking_metric}={r.keys.get(self.cfg.ranking_metric)}"
            for r in results
        )
        return eval_result(
            start, True, shlex.join(results[-1].command), keys, stdout=summary, exit_code=0, t0=t0
        )

    def _run_seed(self, run: str) -> int:
        """The ranked run's prompts are the payload's seed; an earlier benchmark run of the same
        job gets other prompts, so a fork cannot replay answers it memoised there."""
        seed = self.p.seed or 0
        return seed if run == runs_for_mode(self.p.mode)[-1] else seed + 1

    def _record_bench(self, run: str, results: list[bench.ShapeResult]) -> None:
        self.details.setdefault("benchmarks", {})[run] = [
            {"spec": r.spec, "keys": r.keys, "lists": r.lists, "duration_s": round(r.duration_s, 3)}
            for r in results
        ]

"""The audit phase of a model job: after the benchmark runs, with the fork's server stopped.

For each benchmark run and shape: the trusted client's records, a secret sample, the stock
reference (from the store, else computed once on a stock server of the installed vLLM, phase
``reference``), the verdict (runner.model.audit). A failure marks the audited run failed and
raises stage ``audit``; the score then counts for nothing.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.model import audit
from runner.model.bench import ShapeResult
from runner.model.server import Server, ServerSpec
from runner.model.util import StageError

if TYPE_CHECKING:
    from runner.model.job import ModelJob

ENV_STORE = "KITEBENCH_REFERENCE_DIR"


@dataclass
class Audited:
    """One benchmark run to audit: its name, the seed its prompts came from, its shapes."""

    run: str
    seed: int
    results: list[ShapeResult]


def stock_version(installed_dir: Path) -> str:
    """The installed vLLM's version from its own files (never from the fork's ``import vllm``)."""
    try:
        text = (installed_dir / "_version.py").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    m = re.search(r"""__version__\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""", text)
    return m.group(1) if m else "unknown"


def run_audit(job: ModelJob, todo: list[Audited]) -> None:
    assert job.installed is not None
    cfg = job.cfg
    root = job.env.get(ENV_STORE)
    store = audit.Store(Path(root) if root else None)
    if store.root is None:
        job.warnings.append(
            f"{ENV_STORE} is not set: the audit's stock reference was computed for this job "
            "only (set it on the agent to compute it once per model, version, shape and seed)"
        )
    model = job.details.get("server", {}).get("model", cfg.model_name)
    version = stock_version(job.installed.installed_dir)
    digest = audit.model_digest(model)
    secret = store.secret()
    # What each (run, shape) needs: its records, sample, reference key and the refs it has.
    plan: list[dict[str, Any]] = []
    for item in todo:
        for r in item.results:
            if r.records is None or not r.records.is_file():
                raise StageError("audit", f"run {item.run} shape {r.index}: no request records")
            records = audit.load_records(r.records)
            about = audit.reference_about(cfg, digest, version, r.shape, item.seed)
            key = audit.reference_key(about)
            sample = audit.choose_sample(
                len(records), cfg.audit_prompts, secret, f"{key}:{r.shape.num_prompts}"
            )
            refs = store.load(key)
            plan.append({"run": item.run, "result": r, "records": records, "about": about,
                         "key": key, "sample": sample, "refs": refs})
    missing = [p for p in plan if any(i not in p["refs"] for i in p["sample"])]
    if missing:
        _compute_references(job, store, missing, model)
    verdicts: dict[str, list[dict[str, Any]]] = {}
    failed: list[tuple[str, audit.Verdict]] = []
    with job._phase("audit") as ph:
        for p in plan:
            v = audit.judge(p["result"].index, p["result"].shape, p["records"], p["sample"],
                            p["refs"], cfg)
            verdicts.setdefault(p["run"], []).append({**v.as_dict(), "reference": p["key"]})
            if not v.passed:
                failed.append((p["run"], v))
        job.details["audit"] = {
            "runs": verdicts,
            "store": "agent" if store.root is not None else "job",
            "stock_vllm": version,
            "tie_nats": cfg.audit_tie_nats,
            "max_disagreeing": cfg.audit_max_disagreeing,
            "min_compared": cfg.audit_min_compared,
            "computed_references": len(missing),
        }
        n = sum(len(p["sample"]) for p in plan)
        ph.detail = f"{len(plan)} shape run(s), {n} sampled prompts, {len(failed)} failed"
        for run, vs in verdicts.items():
            ev = job.runs.get(run)
            if ev is not None and ev.run is not None:
                ev.run.result["audit"] = "pass" if all(v["passed"] for v in vs) else "fail"
                for v in vs:
                    i = v["shape"]
                    ev.run.result[f"audit.{i}.sampled"] = str(len(v["sampled"]))
                    ev.run.result[f"audit.{i}.disagreeing"] = str(v["disagreeing"])
                    ev.run.result[f"audit.{i}.near_ties"] = str(v["near_ties"])
                    ev.run.result[f"audit.{i}.bad_counts"] = str(v["bad_counts"])
        if failed:
            message = "; ".join(
                f"run {run} shape {v.shape}: {' and '.join(v.failures)}" for run, v in failed
            )
            for run, _ in failed:
                ev = job.runs.get(run)
                if ev is not None and ev.run is not None:
                    ev.run.passed = False
                    ev.run.exit_code = 112
                    ev.run.result["check"] = "fail"
                    ev.run.stderr = (ev.run.stderr + "\n" if ev.run.stderr else "") + message
            job.score = None
            raise StageError("audit", f"audit of the timed run failed: {message}")


def _compute_references(
    job: ModelJob, store: audit.Store, missing: list[dict[str, Any]], model: str
) -> None:
    """Stock vLLM (the installed one, none of the fork) on the same model and launch args."""
    cfg = job.cfg
    env = dict(job.reference_env)  # stock code, the runner's uid: no cache the fork wrote
    env.update(cfg.server_env)
    spec = ServerSpec(
        python=job.python,
        model=model,
        served_model_name=cfg.model_name,
        log=job.work / "reference-server.log",
        cwd=job.work / "reference",
        env=env,
        tensor_parallel=cfg.tensor_parallel,
        extra_args=list(cfg.vllm_args),
        command=cfg.server_command,
    )
    spec.cwd.mkdir(parents=True, exist_ok=True)
    with job._phase("reference") as ph:
        t0 = time.monotonic()
        with Server(spec) as srv:
            try:
                srv.start(cfg.server_startup_timeout)
            except StageError as e:  # the stock server: the agent's fault, not the fork's
                raise StageError("audit", f"stock reference server: {e.message}",
                                 internal=True) from None
            started = time.monotonic() - t0
            prompts = 0
            for p in missing:
                by_index = {r.index: r for r in p["records"]}
                need = {i: by_index[i].prompt for i in p["sample"] if i not in p["refs"]}
                try:
                    p["refs"].update(
                        audit.compute(srv.base_url, cfg.model_name, need,
                                      p["result"].shape.output_len, timeout=cfg.benchmark_timeout)
                    )
                except audit.AuditError as e:
                    raise StageError("audit", str(e), internal=True) from None
                store.save(p["key"], p["about"], p["refs"])
                prompts += len(need)
        took = time.monotonic() - t0
        job.details["reference"] = {"server_start_s": round(started, 3),
                                    "total_s": round(took, 3), "prompts": prompts}
        ph.detail = f"{prompts} prompts on stock vLLM in {took:.1f} s (server {started:.1f} s)"

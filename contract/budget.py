"""One job budget: the sum of every time limit a payload's runs can use, phase by phase.

The host's hard container limit, the local backend's wait and the Buildkite waiter's deadline
all start from :func:`phases_s`, each adding its own margin (container start-up, queueing), so
that no waiter gives up on a job that is still within every limit of its own phases.
"""

from __future__ import annotations

from contract.payload import COMPILE_TIMEOUT_S, CuPayload, ModelPayload, PyPayload, runs_for_mode

Payload = PyPayload | CuPayload | ModelPayload


def phase_limits(payload: Payload) -> list[tuple[str, float]]:
    """(phase, seconds) for every limit the runner applies to this payload, in run order."""
    if isinstance(payload, ModelPayload):
        return _model_phases(payload)
    phases: list[tuple[str, float]] = []
    if isinstance(payload, CuPayload):
        phases.append(("compile", float(COMPILE_TIMEOUT_S)))
    n = 1 if payload.ranking_by == "last" else len(payload.benchmarks)
    runs = runs_for_mode(payload.mode, n)
    for run in runs:
        phases.append((run, float(payload.timeout_for(run))))
    if "leaderboard" in runs:  # the cross-checks after a ranked run (runner.kernels.integrity)
        if payload.integrity.reference_ceiling:
            phases.append(("reference ceiling", float(payload.timeout_for("benchmark"))))
        if payload.integrity.secret_recheck:
            phases.append(("secret recheck", float(payload.timeout_for("test"))))
    return phases


def _model_phases(payload: ModelPayload) -> list[tuple[str, float]]:
    cfg = payload.model_cfg
    phases = [("install", float(cfg.install_timeout)),
              ("server_start", float(cfg.server_startup_timeout))]
    timed = 0
    for run in runs_for_mode(payload.mode):
        if run == "test" or payload.mode == "benchmark":
            phases.append((f"{run}: perplexity", float(payload.test_timeout)))
        if run != "test":
            # one deadline for all shapes of a timed run
            phases.append((f"{run}: benchmark", float(cfg.benchmark_timeout)))
            timed += 1
    if timed:
        # the audit's reference on stock vLLM (when not cached): a server start, then one
        # generation per shape and timed run, each under the benchmark timeout
        phases.append(("reference: server_start", float(cfg.server_startup_timeout)))
        shapes = max(1, len(cfg.benchmark_shapes))
        phases.append(("reference", float(cfg.benchmark_timeout) * shapes * timed))
    return phases


def phases_s(payload: Payload) -> float:
    """The sum of :func:`phase_limits`: how long the runner may legitimately take, set-up
    margins excluded."""
    return sum(seconds for _name, seconds in phase_limits(payload))

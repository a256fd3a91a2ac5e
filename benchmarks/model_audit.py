"""What the audit of the timed run costs: its share of a baseline leaderboard job, and the stock
reference's one-off cost; plus a first-principles estimate for Llama-3.1-8B on one H100.

Three `python -m runner` jobs of examples/vllm_tiny's baseline fork, `--mode leaderboard`:

  unaudited  the kit's bench driver as ``bench_command`` (no records, no audit: as before)
  cold       audited, empty reference store (the job computes the stock reference: ``reference``)
  warm       audited, the store filled by ``cold`` (what every later job on the agent costs)

    python benchmarks/model_audit.py [--estimate-only] [--client-ab N]

``--client-ab N`` isolates what the audit changes in the timed run itself: one stock server of
the example's model, then N pairs of the bench client without and with ``--record``
(``return_token_ids`` + records), alternating so that the machine's load drifts out; medians.

Needs KITEBENCH_VLLM_PYTHON (the vLLM environment) and KITEBENCH_MODELS_DIR holding tiny-llama
(runner/model/tinymodel.py builds it); the forks are packed by examples/vllm_tiny/make_forks.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _job(payload, env: dict[str, str], out: Path) -> tuple[dict, float]:  # type: ignore[no-untyped-def]
    from contract import codec

    out.mkdir(parents=True)
    env = dict(env, SUBMISSION_PAYLOAD=codec.encode(payload), KITEBENCH_OUTPUT_DIR=str(out))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "runner"], env=env, cwd=REPO,
                          capture_output=True, text=True, check=False)
    took = time.monotonic() - t0
    result = json.loads((out / "result.json").read_text())
    if proc.returncode != 0:
        raise SystemExit(f"job failed ({proc.returncode}): {result.get('error', '')[:800]}")
    return result, took


def _phases(result: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in result["kitebench"]["phases"]:
        out[p["name"]] = out.get(p["name"], 0.0) + (p["duration_s"] or 0.0)
    return out


def measure() -> None:
    from launcher.model_task import build_model_payload

    py = os.environ.get("KITEBENCH_VLLM_PYTHON")
    if not py:
        raise SystemExit("set KITEBENCH_VLLM_PYTHON (and KITEBENCH_MODELS_DIR)")
    tmp = Path(tempfile.mkdtemp(prefix="kb-audit-bench-"))
    subprocess.run([py, str(REPO / "examples/vllm_tiny/make_forks.py"), str(tmp / "forks")],
                   check=True, capture_output=True)
    task = REPO / "examples" / "vllm_tiny"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMISSION_")}
    env.update(PYTHONPATH=str(REPO), KITEBENCH_REFERENCE_DIR=str(tmp / "reference"))
    rows = []
    for name in ("unaudited", "cold", "warm"):
        payload = build_model_payload(task, tmp / "forks" / "baseline.tar.gz", mode="leaderboard")
        if name == "unaudited":
            payload.model_cfg.bench_command = ["{python}", str(REPO / "runner/model/bench_driver.py")]
        result, took = _job(payload, env, tmp / name)
        rows.append((name, result, took))
    print("job        total   score (req/s)  phases (s)")
    for name, result, took in rows:
        ph = _phases(result)
        print(f"{name:10} {took:6.1f}  {result['kitebench']['score']:13.2f}  "
              + ", ".join(f"{k} {v:.1f}" for k, v in ph.items()))
    base_total = rows[0][2]
    for name, result, took in rows[1:]:
        ph = _phases(result)
        bench_extra = ph.get("benchmark", 0.0) - _phases(rows[0][1]).get("benchmark", 0.0)
        audit = ph.get("audit", 0.0)
        print(f"{name}: audit phase {audit:.2f} s ({100 * audit / took:.2f} % of the job); "
              f"reference {ph.get('reference', 0.0):.1f} s; benchmark phases vs unaudited "
              f"{bench_extra:+.1f} s; job vs unaudited {took - base_total:+.1f} s "
              f"({100 * (took - base_total) / base_total:+.1f} %)")
    s0 = rows[0][1]["kitebench"]["score"]
    for name, result, _ in rows[1:]:
        s = result["kitebench"]["score"]
        print(f"score {name} vs unaudited: {s:.2f} vs {s0:.2f} req/s ({100 * (s - s0) / s0:+.1f} %)")


def client_ab(pairs: int) -> None:
    import statistics

    from launcher.model_task import build_model_payload
    from runner.model import bench
    from runner.model.install import base_env
    from runner.model.server import Server, ServerSpec

    py = os.environ["KITEBENCH_VLLM_PYTHON"]
    models = os.environ["KITEBENCH_MODELS_DIR"]
    task = REPO / "examples" / "vllm_tiny"
    tmp = Path(tempfile.mkdtemp(prefix="kb-audit-ab-"))
    (tmp / "f.tar").write_bytes(b"")
    cfg = build_model_payload(task, tmp / "f.tar", local_path=True).model_cfg
    env = base_env(dict(os.environ))
    env.update(cfg.server_env)
    spec = ServerSpec(python=py, model=f"{models}/{cfg.model_name}",
                      served_model_name=cfg.model_name, log=tmp / "server.log", cwd=tmp,
                      env=env, extra_args=list(cfg.vllm_args))
    got: dict[bool, list[float]] = {False: [], True: []}
    with Server(spec) as srv:
        srv.start(cfg.server_startup_timeout)
        for i in range(pairs):
            for record in (False, True):
                r = bench.run_shape(
                    0, cfg.benchmark_shapes[0], prefix=bench.default_prefix(py, None),
                    base_url=srv.base_url, model=cfg.model_name, tokenizer=spec.model, seed=0,
                    out_dir=tmp / f"{i}-{record}", env=env, cwd=tmp, timeout=600, record=record)
                got[record].append(float(r.keys["request_throughput"]))
    plain, audited = statistics.median(got[False]), statistics.median(got[True])
    print(f"client A/B, {pairs} pairs, request_throughput medians: stock client {plain:.2f}, "
          f"recording client {audited:.2f} req/s ({100 * (audited - plain) / plain:+.1f} %); "
          f"all: {[round(v, 1) for v in got[False]]} vs {[round(v, 1) for v in got[True]]}")


def estimate() -> None:
    """Llama-3.1-8B, bf16, one H100 SXM (3.35 TB/s, ~990 dense bf16 TFLOP/s), the contract's
    default shape scaled to a leaderboard: 1000 prompts, 512 in / 128 out, 16 sampled."""
    params, bw, flops = 8.0e9, 3.35e12, 990e12
    n, inp, out, k = 1000, 512, 128, 16
    weights_b = 2 * params
    step_s = weights_b / bw  # one decode step is memory-bound: every weight read once
    prefill_tok_s = 0.4 * flops / (2 * params)  # ~40 % MFU
    # the benchmark run: prefill of all prompts + decode at a high batch (~256 in flight)
    bench_s = n * inp / prefill_tok_s + (n / 256) * out * step_s * 1.6  # 1.6: KV reads, overhead
    job_s = 90 + 15 + 2 * bench_s + 15  # load+compile, gate, two benchmark runs, stop
    # reference: a stock server start + k prompts in one batch (prefill + out steps), logprobs=5
    ref_s = 90 + k * inp / prefill_tok_s + out * step_s * 1.1
    warm_audit_s = 0.05 + 0.2  # judge 16x128 ids, count 1000 records; read 1000x128 ids of JSON
    print("first-principles estimate, Llama-3.1-8B bf16 on one H100 (1000 prompts 512/128):")
    print(f"  decode step {1e3 * step_s:.1f} ms, prefill {prefill_tok_s / 1e3:.0f}k tok/s, "
          f"one benchmark run ~{bench_s:.0f} s, leaderboard job ~{job_s:.0f} s")
    print(f"  audit per job (warm): ~{warm_audit_s:.2f} s = {100 * warm_audit_s / job_s:.2f} % "
          f"of the job; the client's return_token_ids adds ~{n * out * 8 / 1e6:.1f} MB of SSE")
    print(f"  reference, once per (model, version, shape, seed) per agent: ~{ref_s:.0f} s "
          f"(server start ~90 s; the {k} prompts themselves {ref_s - 90:.1f} s), x2 per "
          f"leaderboard job's seeds (one server start)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimate-only", action="store_true")
    ap.add_argument("--client-ab", type=int, default=0, metavar="N")
    args = ap.parse_args()
    if args.client_ab:
        client_ab(args.client_ab)
    elif not args.estimate_only:
        measure()
    estimate()
    return 0


if __name__ == "__main__":
    sys.exit(main())

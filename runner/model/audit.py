"""The audit of the timed run (MLPerf TEST01's idea: accuracy is checked on the outputs of the
performance run itself, not on a separate accuracy run a fork can tell apart).

The benchmark decodes greedily (``--temperature 0 --ignore-eos``) and the trusted client
(``bench_driver.py --record``) keeps every timed request's prompt and output token ids. Then:

* **counts**: every request must have returned exactly ``output_len`` token ids, as counted by
  the client (the server's own ``usage`` is only reported, never believed);
* **sample**: ``audit_prompts`` prompts per shape, chosen with a key the fork never sees (a
  secret of the reference store, mixed with the seed and the shape), are compared token for
  token with stock vLLM's greedy output for the same prompt. Where they first differ, the
  difference is a *near-tie* when stock's logprob of the fork's token is within
  ``audit_tie_nats`` of its own choice (numerics: batching, kernel order), else a
  *disagreement*. After a near-tie the rest cannot be compared (the contexts differ).

The reference (stock greedy ids + top-5 logprobs per position) is computed once per model ×
stock vLLM version × launch args × shape × seed and cached in the reference store, a directory
of the runner's uid (0700) that the fork's uid can neither read nor write (hidden from it in the
namespace modes).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.payload import BenchmarkShape, ModelConfig

#: Alternatives kept per reference position (a near-tie's token is among stock's top 2).
TOP_K = 5
KEY_FILE = "audit.key"
FORMAT = 1


class AuditError(Exception):
    """The reference could not be computed (stock server failure): infrastructure, not the fork."""


@dataclass
class Record:
    """One timed request as the trusted client saw it."""

    index: int
    prompt: Any
    expected: int
    token_ids: list[int]
    claimed: int | None
    success: bool


def load_records(path: Path) -> list[Record]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        # bench serve's request ids are "<random prefix>-<index in the dataset>"
        out.append(
            Record(
                index=int(str(r["id"]).rsplit("-", 1)[-1]),
                prompt=r["prompt"],
                expected=int(r["expected"]),
                token_ids=[int(t) for t in r["token_ids"]],
                claimed=r.get("claimed"),
                success=bool(r.get("success")),
            )
        )
    return sorted(out, key=lambda r: r.index)


def choose_sample(n: int, k: int, secret: bytes, label: str) -> list[int]:
    """``k`` of ``range(n)``, fixed by (secret, label): the same prompts every job (so the cached
    reference serves), unknowable without the secret (so a fork cannot be honest only there)."""
    digest = hmac.new(secret, label.encode(), hashlib.sha256).digest()
    return sorted(random.Random(digest).sample(range(n), min(k, n)))


# -- the reference store ---------------------------------------------------------------------


@dataclass
class Reference:
    token_ids: list[int]
    #: per output position: {token id: stock logprob} of stock's top TOP_K
    top: list[dict[int, float]]


class Store:
    """Cached references, one JSON file per key. ``root`` None: per job only (nothing kept)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._secret: bytes | None = None

    def secret(self) -> bytes:
        """The sample key: made once per store (0600), random per job without one."""
        if self._secret is None:
            if self.root is None:
                self._secret = secrets.token_bytes(32)
            else:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                path = self.root / KEY_FILE
                with contextlib.suppress(FileExistsError):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(secrets.token_bytes(32))
                self._secret = path.read_bytes()
        return self._secret

    def load(self, key: str) -> dict[int, Reference]:
        if self.root is None:
            return {}
        try:
            data = json.loads((self.root / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("format") != FORMAT or data.get("key") != key:
            return {}
        return {
            int(i): Reference(r["token_ids"], [{int(t): lp for t, lp in d} for d in r["top"]])
            for i, r in data["prompts"].items()
        }

    def save(self, key: str, about: dict[str, Any], refs: dict[int, Reference]) -> None:
        if self.root is None:
            return
        data = {
            "format": FORMAT,
            "key": key,
            "about": about,
            "prompts": {
                str(i): {"token_ids": r.token_ids, "top": [list(d.items()) for d in r.top]}
                for i, r in sorted(refs.items())
            },
        }
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".ref-", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            # the runner's only: it tells which prompts are sampled (bench sends each request's
            # index as its x-request-id), so the fork's uid must not even read it
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.root / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def reference_key(about: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:32]


def reference_about(
    cfg: ModelConfig, model_digest: str, vllm_version: str, shape: BenchmarkShape, seed: int
) -> dict[str, Any]:
    """What a reference depends on: the weights, the stock vLLM, how it is launched (dtype...),
    the prompts (shape + seed) and the audit's own parameters."""
    return {
        "model": cfg.model_name,
        "model_digest": model_digest,
        "vllm_version": vllm_version,
        "vllm_args": list(cfg.vllm_args),
        "server_env": dict(sorted(cfg.server_env.items())),
        "shape": shape.model_dump(),
        "seed": seed,
        "prompts": cfg.audit_prompts,
        "top_k": TOP_K,
    }


def model_digest(model: str) -> str:
    """Names and sizes of a model dir's files (a re-staged model gets a new reference)."""
    root = Path(model)
    if not root.is_dir():
        return f"name:{model}"
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(root)}\0{p.stat().st_size}\0{p.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def compute(
    base_url: str, model: str, prompts: dict[int, Any], output_len: int, timeout: float
) -> dict[int, Reference]:
    """Stock vLLM's greedy output for each prompt, with its top-K logprobs per position."""

    def one(prompt: Any) -> Reference:
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": output_len,
            "temperature": 0,
            "ignore_eos": True,
            "repetition_penalty": 1.0,  # what the bench client sends
            "logprobs": TOP_K,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        req = urllib.request.Request(
            base_url + "/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                data = json.loads(resp.read())
            choice = data["choices"][0]
            ids = [int(t) for t in choice["token_ids"]]
            top = [
                {int(k.rsplit(":", 1)[1]): float(v) for k, v in (d or {}).items()}
                for d in choice["logprobs"]["top_logprobs"]
            ]
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise AuditError(f"stock vLLM reference request failed: {e}") from None
        if len(ids) != output_len or len(top) != output_len:
            raise AuditError(f"stock vLLM returned {len(ids)} tokens, asked for {output_len}")
        return Reference(ids, top)

    items = sorted(prompts.items())
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(items)))) as pool:
        refs = list(pool.map(lambda kv: one(kv[1]), items))
    return {i: r for (i, _), r in zip(items, refs, strict=True)}


# -- the verdict -----------------------------------------------------------------------------


@dataclass
class Verdict:
    shape: int
    requests: int
    sampled: list[int]
    agreed: int = 0
    ties: int = 0
    disagreeing: list[dict[str, Any]] = field(default_factory=list)
    bad_counts: list[dict[str, Any]] = field(default_factory=list)
    compared_tokens: int = 0
    sampled_tokens: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "requests": self.requests,
            "sampled": self.sampled,
            "agreed": self.agreed,
            "near_ties": self.ties,
            "disagreeing": len(self.disagreeing),
            "first_disagreement": self.disagreeing[0] if self.disagreeing else None,
            "bad_counts": len(self.bad_counts),
            "first_bad_count": self.bad_counts[0] if self.bad_counts else None,
            "compared_tokens": self.compared_tokens,
            "sampled_tokens": self.sampled_tokens,
            "passed": self.passed,
            "failures": self.failures,
        }


def judge(
    shape_index: int,
    shape: BenchmarkShape,
    records: list[Record],
    sample: list[int],
    refs: dict[int, Reference],
    cfg: ModelConfig,
) -> Verdict:
    v = Verdict(shape_index, len(records), sample)
    by_index = {r.index: r for r in records}
    for r in records:
        if not r.success or len(r.token_ids) != shape.output_len:
            v.bad_counts.append(
                {"prompt": r.index, "seen": len(r.token_ids), "expected": shape.output_len,
                 "usage_claimed": r.claimed}
            )
    for i in sample:
        rec, ref = by_index.get(i), refs[i]
        got = rec.token_ids if rec is not None else []
        v.sampled_tokens += len(ref.token_ids)
        pos = next(
            (p for p, (a, b) in enumerate(zip(got, ref.token_ids, strict=False)) if a != b),
            None,
        )
        if pos is None and len(got) >= len(ref.token_ids):
            v.agreed += 1
            v.compared_tokens += len(ref.token_ids)
            continue
        if pos is None:  # a prefix of stock's output, then nothing: the count check reports it
            v.compared_tokens += len(got)
            v.disagreeing.append(
                {"prompt": i, "position": len(got), "fork": None, "stock": ref.token_ids[len(got)],
                 "why": "the output ended early"}
            )
            continue
        top = ref.top[pos]
        best = max(top.values())
        mine = top.get(got[pos])
        if mine is not None and best - mine <= cfg.audit_tie_nats:
            v.ties += 1
            v.compared_tokens += pos
            continue
        v.compared_tokens += pos
        why = (
            f"not in stock's top {TOP_K}"
            if mine is None
            else f"{best - mine:.3g} nats below stock's choice"
        )
        v.disagreeing.append(
            {"prompt": i, "position": pos, "fork": got[pos], "stock": ref.token_ids[pos],
             "why": why}
        )
    if v.bad_counts:
        b = v.bad_counts[0]
        claim = "" if b["usage_claimed"] is None else f", its usage claimed {b['usage_claimed']}"
        v.failures.append(
            f"{len(v.bad_counts)} of {len(records)} requests did not return output_len="
            f"{shape.output_len} tokens (first: prompt {b['prompt']}: {b['seen']} token(s) "
            f"counted by the client{claim})"
        )
    if len(v.disagreeing) > cfg.audit_max_disagreeing:
        d = v.disagreeing[0]
        v.failures.append(
            f"{len(v.disagreeing)} of {len(sample)} sampled prompts disagree with stock vLLM's "
            f"greedy output (allowed {cfg.audit_max_disagreeing}); first: prompt {d['prompt']} at "
            f"output token {d['position']}: fork token {d['fork']}, stock token {d['stock']} "
            f"({d['why']})"
        )
    too_few = v.compared_tokens < cfg.audit_min_compared * v.sampled_tokens
    if v.sampled_tokens and too_few and len(v.failures) == int(bool(v.bad_counts)):
        v.failures.append(
            f"only {v.compared_tokens} of {v.sampled_tokens} sampled output tokens could be "
            f"compared before a near-tie (audit_min_compared={cfg.audit_min_compared})"
        )
    return v

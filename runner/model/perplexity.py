"""The perplexity gate: the fork must score held-out text like stock vLLM does.

Each document is sent once with ``echo`` + ``logprobs`` and ``max_tokens: 0`` (the prompt's own
token log-probabilities, no generation), so a fork cannot choose the text it is judged on.
Perplexity = ``exp(-sum(logprob) / n)`` over ALL scored tokens of all documents (token-weighted),
summed in float64 with ``math.fsum``; the first token of each document has no context and is
skipped. Any answer that cannot be trusted fails the gate: a non-200, a missing or misaligned
``token_logprobs`` (its length must equal ``usage.prompt_tokens``), NaN, or a clamped -inf
(<= -9999).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from importlib import resources

CLAMPED = -9999.0
DEFAULT_CORPUS = "heldout.txt"


class GateError(Exception):
    """The server's answers cannot be scored (the gate fails)."""


def default_corpus() -> str:
    return resources.files("runner").joinpath("data", DEFAULT_CORPUS).read_text(encoding="utf-8")


def documents(text: str, chunk_chars: int) -> list[str]:
    """Blank-line separated documents; long ones split at whitespace into <= chunk_chars."""
    docs: list[str] = []
    for para in text.replace("\r\n", "\n").split("\n\n"):
        para = para.strip()
        while len(para) > chunk_chars:
            cut = para.rfind(" ", 0, chunk_chars)
            cut = cut if cut > chunk_chars // 2 else chunk_chars
            docs.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            docs.append(para)
    return docs


@dataclass
class Perplexity:
    perplexity: float
    tokens: int
    documents: int
    sum_logprob: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score_response(body: dict, index: int) -> list[float]:
    """The scored log-probs of one completion response (leading null removed), validated."""
    try:
        choice = body["choices"][0]
        lps = choice["logprobs"]["token_logprobs"]
        prompt_tokens = body["usage"]["prompt_tokens"]
    except (KeyError, IndexError, TypeError):
        raise GateError(
            f"document {index}: the response has no choices[0].logprobs.token_logprobs "
            "or usage.prompt_tokens"
        ) from None
    if not isinstance(lps, list) or not isinstance(prompt_tokens, int):
        raise GateError(f"document {index}: token_logprobs is not a list")
    if len(lps) != prompt_tokens:
        raise GateError(
            f"document {index}: {len(lps)} token_logprobs for {prompt_tokens} prompt tokens "
            "(misaligned)"
        )
    if len(lps) < 2:
        raise GateError(f"document {index}: fewer than 2 tokens, nothing to score")
    if lps[0] is not None:
        raise GateError(
            f"document {index}: the first token has a logprob ({lps[0]!r}); expected null"
        )
    out: list[float] = []
    for j, v in enumerate(lps[1:], start=1):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise GateError(f"document {index}, token {j}: logprob {v!r} is not a number")
        v = float(v)
        if math.isnan(v) or v > 0.0 + 1e-6:
            raise GateError(
                f"document {index}, token {j}: logprob {v!r} is not a valid log-probability"
            )
        if v <= CLAMPED:
            raise GateError(f"document {index}, token {j}: logprob {v!r} is -inf (clamped)")
        out.append(v)
    return out


def combine(per_doc: list[list[float]]) -> Perplexity:
    flat = [v for doc in per_doc for v in doc]
    if not flat:
        raise GateError("no tokens were scored")
    total = math.fsum(flat)
    ppl = math.exp(-total / len(flat))
    if not math.isfinite(ppl):
        raise GateError(
            f"perplexity is not finite (sum of logprobs {total!r} over {len(flat)} tokens)"
        )
    return Perplexity(ppl, len(flat), len(per_doc), total)


def _post(url: str, body: dict, timeout: float) -> dict:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own server
            return json.loads(resp.read(64 * 2**20))
    except urllib.error.HTTPError as e:
        detail = e.read(2000).decode("utf-8", "replace")
        raise GateError(f"HTTP {e.code} from /v1/completions: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise GateError(f"/v1/completions failed: {getattr(e, 'reason', e)}") from None
    except json.JSONDecodeError:
        raise GateError("/v1/completions did not answer JSON") from None


def measure(base_url: str, model: str, docs: list[str], *, timeout: float = 300) -> Perplexity:
    """Perplexity of ``docs`` on the server at ``base_url`` (served model id ``model``), all
    requests within ``timeout`` seconds."""
    if not docs:
        raise GateError("the held-out corpus is empty")
    deadline = time.monotonic() + timeout
    per_doc = []
    for i, doc in enumerate(docs):
        left = deadline - time.monotonic()
        if left <= 0:
            raise GateError(
                f"the perplexity requests did not finish within {timeout:.0f} s "
                f"({i} of {len(docs)} documents scored)"
            )
        body = _post(
            base_url + "/v1/completions",
            {
                "model": model,
                "prompt": doc,
                "echo": True,
                "logprobs": 0,
                "max_tokens": 0,
                "temperature": 0,
            },
            left,
        )
        per_doc.append(score_response(body, i))
    return combine(per_doc)


@dataclass
class GateVerdict:
    passed: bool
    measured: float
    baseline: float | None
    tolerance: float
    relative_deviation: float | None
    tokens: int
    documents: int
    gated: bool  #: False when the task has no baseline (validity checked, value not compared)

    def as_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        if not self.gated:
            return f"perplexity {self.measured:.6g} over {self.tokens} tokens (no baseline: not compared)"
        rel = self.relative_deviation or 0.0
        verdict = "within" if self.passed else "outside"
        return (
            f"perplexity {self.measured:.6g} vs baseline {self.baseline:.6g}: deviation "
            f"{rel:.2%} {verdict} the tolerance {self.tolerance:.2%} ({self.tokens} tokens)"
        )


def judge(p: Perplexity, baseline: float | None, tolerance: float) -> GateVerdict:
    """Pass iff ``|measured - baseline| / baseline <= tolerance``."""
    if baseline is None:
        return GateVerdict(True, p.perplexity, None, tolerance, None, p.tokens, p.documents, False)
    rel = abs(p.perplexity - baseline) / baseline
    return GateVerdict(
        rel <= tolerance, p.perplexity, baseline, tolerance, rel, p.tokens, p.documents, True
    )

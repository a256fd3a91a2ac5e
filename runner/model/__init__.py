"""The model path: benchmark a vLLM fork end to end (see docs/model-path.md).

archive (get + safe extraction) → install (shadow overlay or ``pip install -e``, never touching
the installed vLLM) → server (``/health``) → perplexity gate on held-out text → ``vllm bench
serve`` per shape → score. Modules: archive, install, server, perplexity, bench, job.
"""

from __future__ import annotations

from runner.model.job import run_model

__all__ = ["run_model"]

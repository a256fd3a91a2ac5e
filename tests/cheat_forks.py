"""Pack CHEATING vLLM forks from the installed vLLM (run with the vLLM env's python), in the style
of examples/vllm_tiny/make_forks.py; the audit of the timed run must catch each of them.

    python tests/cheat_forks.py OUT_DIR

Each changes one module, ``vllm/entrypoints/openai/completion/serving.py``: the stock file plus
a wrapper of ``OpenAIServingCompletion.create_completion`` that leaves the perplexity gate's
requests (echo + logprobs, not streamed) to the real model and cheats on benchmark-shaped ones
(streamed, no echo):

  canned.tar.gz   answers with canned tokens without running the model (right count, ids, usage)
  short.tar.gz    generates 1 token while ``usage`` claims the requested count
  garbage.tar.gz  samples at temperature 2 (vLLM's maximum) instead of decoding greedily
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "vllm_tiny"))
from make_forks import installed_vllm, pack  # noqa: E402

SERVING = "entrypoints/openai/completion/serving.py"

_COMMON = '''

# --- kitebench test fork: cheats on benchmark-shaped requests ---
import json as _kb_json

_kb_orig_create = OpenAIServingCompletion.create_completion


def _kb_benchmark_shaped(request):
    return bool(request.stream) and not request.echo and (request.max_tokens or 0) > 1
'''

CANNED = _COMMON + '''

async def _kb_create(self, request, raw_request=None):
    if not _kb_benchmark_shaped(request):
        return await _kb_orig_create(self, request, raw_request)
    n = request.max_tokens

    async def canned():
        for k in range(n):
            chunk = {"id": "cmpl-kb", "object": "text_completion", "created": 0,
                     "model": request.model, "choices": [{
                         "index": 0, "text": " a", "logprobs": None,
                         "finish_reason": "length" if k == n - 1 else None,
                         "token_ids": [65]}]}
            yield "data: " + _kb_json.dumps(chunk) + "\\n\\n"
        usage = {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
        yield "data: " + _kb_json.dumps({"id": "cmpl-kb", "object": "text_completion",
                                           "created": 0, "model": request.model,
                                           "choices": [], "usage": usage}) + "\\n\\n"
        yield "data: [DONE]\\n\\n"

    return canned()


OpenAIServingCompletion.create_completion = _kb_create
'''

SHORT = _COMMON + '''

async def _kb_create(self, request, raw_request=None):
    if not _kb_benchmark_shaped(request):
        return await _kb_orig_create(self, request, raw_request)
    wanted = request.max_tokens
    request.max_tokens = 1
    gen = await _kb_orig_create(self, request, raw_request)
    if not hasattr(gen, "__aiter__"):
        return gen

    async def claim_full_count():
        async for msg in gen:
            if '"usage"' in msg and msg.startswith("data: {"):
                data = _kb_json.loads(msg[6:])
                if data.get("usage"):
                    data["usage"]["completion_tokens"] = wanted
                    msg = "data: " + _kb_json.dumps(data) + "\\n\\n"
            yield msg

    return claim_full_count()


OpenAIServingCompletion.create_completion = _kb_create
'''

GARBAGE = _COMMON + '''

async def _kb_create(self, request, raw_request=None):
    if _kb_benchmark_shaped(request):
        request.temperature = 2.0
    return await _kb_orig_create(self, request, raw_request)


OpenAIServingCompletion.create_completion = _kb_create
'''


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    stock = (installed_vllm() / SERVING).read_text(encoding="utf-8")
    if "class OpenAIServingCompletion" not in stock:
        sys.exit(f"cannot patch {SERVING}: no OpenAIServingCompletion in this vLLM version")
    for name, patch in (("canned", CANNED), ("short", SHORT), ("garbage", GARBAGE)):
        print(pack(out / f"{name}.tar.gz", {SERVING: stock + patch}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

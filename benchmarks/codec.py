"""Codec speed: encode + decode of a payload with a 1 MiB source, against raw zlib on the same
bytes; the inline path (the level chosen by the 96 KiB limit); and the cost of refusing bombs.

Baselines, measured in the same run on the payload's own JSON bytes: raw ``zlib.compress`` +
``zlib.decompress`` at level 1 and at level 6 (the codec adds JSON, base64, the streamed
decompression under the cap and the contract's validation).

    python benchmarks/codec.py [--repeat N] [--repo DIR]

``--repo DIR`` measures the codec of another checkout (before/after figures under the same load).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import statistics
import string
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOAL_MS = 20.0


def _source(n: int) -> str:
    """~n bytes of Python-looking text (random words: compresses 2.4x at level 1, 2.7x at 6)."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(2000)]
    lines, size = [], 0
    while size < n:
        line = "    " + " = ".join(rng.choices(words, k=3)) + f"  # {rng.random():.6f}\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)[:n]


def _timeit(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


codec: Any = None  # contract.codec of --repo, imported in main()
dump_payload: Any = None


def _level(text: str) -> str:
    """The zlib level class an encoded payload was made with (from its stream header)."""
    head = base64.b64decode(text[:8])
    if head[2] & 0x06 == 0:
        return "stored"
    return {0: "1", 1: "2-5", 2: "6", 3: "7-9"}[head[1] >> 6]


def _fits_only_at_6(src: str) -> dict[str, Any]:
    """A payload around the inline limit: level 1 is too big for it, level 6 is not."""
    lo, hi = 1024, 1 << 20
    while hi - lo > 256:  # the largest source whose level-6 encoding still fits
        mid = (lo + hi) // 2
        data = dump_payload(codec.validate({"lang": "py", "main": "eval.py", "sources": {"eval.py": src[:mid]}}))
        raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        lo, hi = (mid, hi) if 4 * -(-len(zlib.compress(raw, 6)) // 3) <= codec.INLINE_LIMIT else (lo, mid)
    return {"lang": "py", "main": "eval.py", "sources": {"eval.py": src[:lo]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose codec to measure")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    global codec, dump_payload
    from contract import codec
    from contract.payload import dump_payload

    print(f"codec of {args.repo}")
    n = args.repeat
    src = _source(1 << 20)
    payload = codec.validate({"lang": "py", "main": "eval.py", "sources": {"eval.py": "", "submission.py": src}})
    raw = json.dumps(dump_payload(payload), separators=(",", ":"), ensure_ascii=False).encode()
    encoded = codec.encode(payload, limit=None)
    enc_med, enc_min = _timeit(lambda: codec.encode(payload, limit=None), n)
    dec_med, dec_min = _timeit(lambda: codec.decode(encoded), n)
    print(f"1 MiB source payload ({len(raw) / 1024:.0f} KiB of JSON), {n} runs each, median (min):")
    print(f"  codec, no limit: encoded {len(encoded) / 1024:.0f} KiB (zlib level {_level(encoded)}; "
          f"cannot go inline: limit {codec.INLINE_LIMIT // 1024} KiB)")
    print(f"    encode       {enc_med * 1e3:7.2f} ms ({enc_min * 1e3:6.2f})")
    print(f"    decode       {dec_med * 1e3:7.2f} ms ({dec_min * 1e3:6.2f})   incl. validation")
    total = enc_med + dec_med
    print(f"    round trip   {total * 1e3:7.2f} ms ({(enc_min + dec_min) * 1e3:6.2f})   "
          f"goal <= {GOAL_MS:.0f} ms: {'met' if total * 1e3 <= GOAL_MS else 'not met'}")
    for level in (1, 6):
        comp = zlib.compress(raw, level)
        c_med, c_min = _timeit(lambda level=level: zlib.compress(raw, level), n)
        d_med, d_min = _timeit(lambda comp=comp: zlib.decompress(comp), n)
        print(f"  raw zlib level {level} on the same JSON: {len(comp) / 1024:.0f} KiB; compress "
              f"{c_med * 1e3:.2f} ms ({c_min * 1e3:.2f}) + decompress {d_med * 1e3:.2f} ms "
              f"({d_min * 1e3:.2f}) = {(c_med + d_med) * 1e3:.2f} ms; codec round trip / this: "
              f"{total / (c_med + d_med):.2f}x")

    def refused() -> None:
        with contextlib.suppress(codec.PayloadTooLarge):
            codec.encode(payload)

    r_med, r_min = _timeit(refused, n)
    print(f"  codec.encode with the inline limit (refused, too large): {r_med * 1e3:.2f} ms "
          f"({r_min * 1e3:.2f})")
    near = codec.validate(_fits_only_at_6(src))
    text = codec.encode(near)
    e_med, e_min = _timeit(lambda: codec.encode(near), n)
    size = len(near.sources["eval.py"])
    print(f"payload at the inline limit ({size / 1024:.0f} KiB source): encoded {len(text) / 1024:.1f} "
          f"KiB (zlib level {_level(text)}), encode {e_med * 1e3:.2f} ms ({e_min * 1e3:.2f})")
    small = codec.validate({"lang": "py", "main": "eval.py", "sources": {"eval.py": src[: size // 2]}})
    text = codec.encode(small)
    s_med, s_min = _timeit(lambda: codec.encode(small), n)
    print(f"payload well under it ({size // 2 / 1024:.0f} KiB source): encoded {len(text) / 1024:.1f} "
          f"KiB (zlib level {_level(text)}), encode {s_med * 1e3:.2f} ms ({s_min * 1e3:.2f})")

    for gib in (0.125, 1.0):
        c = zlib.compressobj(9)
        block = b" " * (1 << 20)
        bomb = b"".join([c.compress(block) for _ in range(int(gib * 1024))] + [c.flush()])
        text = base64.b64encode(bomb)
        tracemalloc.start()
        t = time.perf_counter()
        with contextlib.suppress(codec.PayloadTooLarge):
            codec.decode(text)
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{gib:g} GiB zlib bomb ({len(text) / 1024:.0f} KiB encoded): refused in "
              f"{dt * 1e3:.0f} ms, peak traced memory {peak / 2**20:.0f} MiB (cap "
              f"{codec.DEFAULT_MAX_DECOMPRESSED >> 20} MiB)")


if __name__ == "__main__":
    main()

"""Codec speed: encode + decode of a payload with a 1 MiB source, and the cost of refusing bombs.

    python benchmarks/codec.py
"""

from __future__ import annotations

import base64
import contextlib
import random
import statistics
import string
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract import codec  # noqa: E402


def _source(n: int) -> str:
    """~n bytes of Python-looking text (compresses like real code, ~4-5x)."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(2000)]
    lines, size = [], 0
    while size < n:
        line = "    " + " = ".join(rng.choices(words, k=3)) + f"  # {rng.random():.6f}\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)[:n]


def _timeit(fn, repeat: int = 15) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    src = _source(1 << 20)
    payload = codec.validate({"lang": "py", "main": "eval.py", "sources": {"eval.py": "", "submission.py": src}})
    encoded = codec.encode(payload, limit=None)
    enc_med, enc_min = _timeit(lambda: codec.encode(payload, limit=None))
    dec_med, dec_min = _timeit(lambda: codec.decode(encoded))
    print(f"1 MiB source payload: encoded {len(encoded) / 1024:.0f} KiB "
          f"(inline limit {codec.INLINE_LIMIT // 1024} KiB)")
    print(f"  encode  median {enc_med * 1e3:7.2f} ms   min {enc_min * 1e3:7.2f} ms")
    print(f"  decode  median {dec_med * 1e3:7.2f} ms   min {dec_min * 1e3:7.2f} ms   (incl. validation)")
    print(f"  total   median {(enc_med + dec_med) * 1e3:7.2f} ms")

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

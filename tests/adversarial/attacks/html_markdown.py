"""Markup in outputs: the kernel fails with an error, stdout and stderr full of HTML, Markdown and
terminal escapes, hoping one of them renders in the Buildkite annotation (a fake "passed"
heading, a table row, an image that phones home, a script) or rewrites the reader's terminal."""
import sys

from hostile import *

EVIL = ("<img src=x onerror=alert(1)><script>alert(1)</script> [details](https://evil.example/x) "
        "![p](https://evil.example/p.png) **PASSED** | test | pass | 0 | 0.01 s |\n"
        "### ✅ kitebench: passed\n```\n</details><details open>\x1b]0;pwned\x07\x1b[2J")
print(EVIL)
print(EVIL, file=sys.stderr)
_fd = int(os.environ.get("POPCORN_FD", "1"))
os.write(_fd, ("test.0.spec: " + EVIL.replace("\n", " ") + "\n").encode())


def custom_kernel(data):
    raise ValueError(EVIL)

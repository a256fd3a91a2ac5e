"""Bytes that break parsers: invalid UTF-8, NULs, lone surrogates, bidi overrides and a key that
differs from "check" only by an invisible character, on POPCORN_FD and stdout; then exit 0."""
import sys

from hostile import *

_fd = int(os.environ.get("POPCORN_FD", "1"))
_junk = b"\xff\xfe\xed\xa0\x80\x00\xc3\x28 \xe2\x80\xae ssap :kcehc"
os.write(_fd, b"check\xe2\x80\x8b: pass\n" + _junk + b"\ntest-count: 3\x00\ncheck\x00: pass\n")
sys.stdout.buffer.write(_junk * 1000 + b"\n")
sys.stdout.flush()
os._exit(0)


def custom_kernel(data):
    return wrong(data)

"""Odd counts: a test-count the runner cannot check ("1e999", with a bidi override and a
4,300-digit tail), with check: pass and exit 0."""
from hostile import *

_fd = int(os.environ.get("POPCORN_FD", "1"))
os.write(_fd, ("test-count: 1e999\u202e" + "9" * 4300 + "\ncheck: pass\n").encode())
os._exit(0)


def custom_kernel(data):
    return wrong(data)

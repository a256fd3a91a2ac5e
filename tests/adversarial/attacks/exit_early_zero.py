"""Exit codes: leave the harness with exit code 0 at import, before it reports anything (a
runner that takes exit 0 as a pass passes it)."""
from hostile import *

os._exit(0)


def custom_kernel(data):
    return wrong(data)

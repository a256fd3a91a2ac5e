"""Writes to /root: the home of the user running the launcher (ssh keys, shell rc files, caches
the next tool run reads)."""
from hostile import *

for _p in (f"/root/kbadv-{TOKEN}", f"/root/.cache/kbadv-{TOKEN}", f"/root/.config/kbadv-{TOKEN}"):
    if write_file(_p, b"# kbadv marker\n"):
        say(f"wrote {_p}")


def custom_kernel(data):
    return wrong(data)

"""Writes to /etc: drop files where the next login or the next process reads them (only a
marker and a comment: the suite checks they are not there)."""
from hostile import *

for _p in (f"/etc/kbadv-{TOKEN}", f"/etc/profile.d/kbadv-{TOKEN}.sh", f"/etc/cron.d/kbadv-{TOKEN}"):
    if write_file(_p, b"# kbadv marker\n"):
        say(f"wrote {_p}")


def custom_kernel(data):
    return wrong(data)

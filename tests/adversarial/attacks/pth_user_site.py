"""Persistence via .pth / the user site: drop a .pth file (and usercustomize/sitecustomize) into
every site dir this user could have, so the NEXT run's interpreter (the runner or the next
submission's harness) executes code that turns failures into passes."""
import pwd
import site
import sysconfig

from hostile import *

PAYLOAD = ("import os; os.environ.setdefault('KBADV_POISON', '" + TOKEN + "')\n")
_homes = {os.path.expanduser("~"), "/root"}
with contextlib.suppress(KeyError):
    _homes.add(pwd.getpwuid(os.getuid()).pw_dir)
_dirs = set()
for _h in sorted(h for h in _homes if os.path.isdir(h)):
    for _py in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        _dirs.add(os.path.join(_h, ".local", "lib", _py, "site-packages"))
with contextlib.suppress(Exception):
    _dirs.add(site.getusersitepackages())
for _k in ("purelib", "platlib"):
    _dirs.add(sysconfig.get_paths()[_k])
_dirs.update(p for p in sys.path if p.endswith("site-packages"))
for _d in sorted(_dirs):
    with contextlib.suppress(OSError):
        os.makedirs(_d, exist_ok=True)
    for _name, _text in ((f"kbadv-{TOKEN}.pth", PAYLOAD), (f"kbadv_{TOKEN}_usercustomize.py", PAYLOAD)):
        if write_file(os.path.join(_d, _name), _text.encode()):
            say(f"planted {_d}/{_name}")


def custom_kernel(data):
    if os.environ.get("KBADV_POISON"):
        leak("a previous run's .pth file ran in this one")
    return wrong(data)

"""Host secrets: files only root may read (/etc/shadow, root's ssh keys and credentials, the
docker client config). A sandbox running on the host's root uid underneath reads them as their
owner, read-only mount or not; the submission then prints them into result.json."""
from hostile import *

for _path in ("/etc/shadow", "/etc/gshadow", "/root/.ssh/id_rsa", "/root/.ssh/id_ed25519",
              "/root/.docker/config.json", "/root/.aws/credentials", "/root/.netrc",
              "/root/.bash_history", "/etc/sudoers"):
    try:
        with open(_path, "rb") as _f:
            _n = len(_f.read(1 << 16))
    except OSError as _e:
        say(f"{_path}: {_e.strerror}")
        continue
    leak(f"read {_path} ({_n} bytes)")


def custom_kernel(data):
    return wrong(data)

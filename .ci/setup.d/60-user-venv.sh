# A Python an unprivileged user can run, for the adversarial suite's "process isolation as a
# normal user" mode (tests/adversarial): the CI interpreter may live under a 0700 home.
#
# Sourced by .ci/run (set -euo pipefail). Idempotent: a venv of the system python3 under
# $KITEBENCH_CACHE with the few packages `kitebench submit --isolation process` needs, installed
# from the wheelhouse (the runner's wheels, fetched by 30-docker.sh, plus click and PyYAML).

_kb_uv="$KITEBENCH_CACHE/user-venv"
_kb_wheels="$KITEBENCH_CACHE/wheels"
if ! "$_kb_uv/bin/python" -c 'import pydantic, numpy, yaml, click' >/dev/null 2>&1; then
    command -v /usr/bin/python3 >/dev/null || { echo "60-user-venv: no /usr/bin/python3" >&2; exit 1; }
    if ! /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    pyver="$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    bash images/fetch-wheels.sh "$_kb_wheels" "$pyver"
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version "$pyver" --implementation cp --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$_kb_wheels" click PyYAML
    python3 - "$_kb_uv" "$_kb_wheels" <<'PY'
import sys
sys.path.insert(0, ".")
from tests.adversarial.world import build_user_venv
from pathlib import Path
build_user_venv(Path(sys.argv[1]), Path(sys.argv[2]))
PY
fi

# Docker engine + the offline base image (kitebench-base:bookworm) for the container tests.
#
# Sourced by .ci/run (set -euo pipefail). Idempotent: installs only what is missing, starts
# dockerd only when `docker info` fails (and then stops it at exit), builds the base image only
# when it is missing, from a cached debootstrap tarball under $KITEBENCH_CACHE when there is one.

_kb_need=()
command -v dockerd >/dev/null || _kb_need+=(docker.io)
command -v debootstrap >/dev/null || _kb_need+=(debootstrap)
if ((${#_kb_need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${_kb_need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    echo "::: starting dockerd"
    setsid dockerd --host=unix:///var/run/docker.sock >"$KITEBENCH_CACHE/dockerd.log" 2>&1 &
    _kb_dockerd_pid=$!
    # Stop only the dockerd this script started.
    ci_on_exit "kill $_kb_dockerd_pid 2>/dev/null; wait $_kb_dockerd_pid 2>/dev/null"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -n 20 "$KITEBENCH_CACHE/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect kitebench-base:bookworm >/dev/null 2>&1; then
    KITEBENCH_BASE_TARBALL="$KITEBENCH_CACHE/base/kitebench-base-bookworm.tar" \
        bash images/build-base.sh kitebench-base:bookworm
fi

# Wheels the offline test image installs (pydantic, numpy) when it cannot reach an index:
# fetched once into the cache; tests/docker_support.py copies them into the build context.

bash images/fetch-wheels.sh "$KITEBENCH_CACHE/wheels"

#!/usr/bin/env bash
# Download the wheels the runner image installs (images/runner/requirements.txt) into a
# wheelhouse, for building images with no index access (air-gapped hosts, the offline test image).
#
#   images/fetch-wheels.sh DIR [PYTHON_VERSION]
#
# PYTHON_VERSION is the base image's Python (default 3.11, Debian bookworm's). The wheels are
# manylinux x86_64 binaries; pass a different --platform through PIP_DOWNLOAD_ARGS if needed.
set -euo pipefail
dir="${1:?usage: fetch-wheels.sh DIR [PYTHON_VERSION]}"
pyver="${2:-3.11}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$dir"
# shellcheck disable=SC2086
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$pyver" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    ${PIP_DOWNLOAD_ARGS:-} -r "$here/runner/requirements.txt" -d "$dir"
echo "fetch-wheels: $(find "$dir" -name '*.whl' | wc -l) wheels in $dir"

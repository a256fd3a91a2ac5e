# bubblewrap: the local backend's namespace sandbox for submitted code (runner.sandbox). Without
# it process isolation falls back to "not hardened"; the tests of the hardened modes need it.
#
# Sourced by .ci/run (set -euo pipefail). Idempotent.
if ! command -v bwrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi
bwrap --ro-bind / / --unshare-all --die-with-parent true \
    || { echo "bubblewrap cannot make namespaces on this machine" >&2; exit 1; }

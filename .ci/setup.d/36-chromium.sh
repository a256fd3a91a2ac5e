# Headless Chromium (Debian's package) for the campaign HTML report test (tests/test_campaign_report.py),
# which opens the page, asserts on its DOM and keeps a screenshot. Exports KITEBENCH_CHROMIUM.
#
# Sourced by .ci/run (set -euo pipefail). Idempotent: installs only when no chromium is found.
if ! command -v chromium >/dev/null && ! command -v chromium-headless-shell >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
KITEBENCH_CHROMIUM="$(command -v chromium-headless-shell || command -v chromium)"
export KITEBENCH_CHROMIUM
echo "::: chromium: $KITEBENCH_CHROMIUM"

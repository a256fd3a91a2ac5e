#!/usr/bin/env bash
# Build the offline base image (default tag kitebench-base:bookworm) from Debian packages with
# debootstrap: no container registry is needed, only a Debian mirror (or a cached rootfs tarball).
#
#   images/build-base.sh [TAG]
#
# Environment:
#   KITEBENCH_BASE_MIRROR   Debian mirror (default: the first archive in this host's apt sources)
#   KITEBENCH_BASE_SUITE    Debian suite (default bookworm)
#   KITEBENCH_BASE_TARBALL  rootfs tarball cache: imported when it exists, written after a
#                           debootstrap run otherwise (default: none, always debootstrap)
#
# Needs root (debootstrap), docker and debootstrap. The image holds python3 + venv + pip +
# ca-certificates, which is all images/runner/Dockerfile needs from its base.
set -euo pipefail

tag="${1:-kitebench-base:bookworm}"
suite="${KITEBENCH_BASE_SUITE:-bookworm}"
# The mirror this machine is configured with (deb822 .sources or one-line .list), not a
# hard-coded public host; security archives are skipped.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        awk '/^[[:space:]]*URIs:/ {for (i = 2; i <= NF; i++) print $i}
             /^[[:space:]]*deb[[:space:]]/ {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /=/) {print $i; break}}' "$f"
    done | grep -v -- '-security' | head -n 1
}
mirror="${KITEBENCH_BASE_MIRROR:-$(host_mirror)}"
[[ -n "$mirror" ]] || { echo "build-base: no Debian mirror in this host's apt sources: set KITEBENCH_BASE_MIRROR" >&2; exit 1; }
tarball="${KITEBENCH_BASE_TARBALL:-}"

if [[ -n "$tarball" && -s "$tarball" ]]; then
    echo "build-base: importing cached rootfs $tarball as $tag"
    docker import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
    exit 0
fi

command -v debootstrap >/dev/null || { echo "build-base: debootstrap is not installed" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "build-base: debootstrap $suite from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}
# Shrink: apt lists and caches are not needed in an image that installs nothing more with apt
# at test time (the CUDA path apt-installs on its own base).
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*

out="$work/rootfs.tar"
tar -C "$work/rootfs" --numeric-owner -cf "$out" .
if [[ -n "$tarball" ]]; then
    mkdir -p "$(dirname "$tarball")"
    cp "$out" "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
    echo "build-base: cached rootfs at $tarball"
fi
docker import --change 'CMD ["/bin/bash"]' "$out" "$tag" >/dev/null
echo "build-base: built $tag"

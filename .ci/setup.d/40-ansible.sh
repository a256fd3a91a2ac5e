# Vendor provisioning tests: ansible (core + community.general for the chroot connection),
# ansible-lint, and debootstrap + dpkg-deb to build the Debian test host. The host's rootfs
# tarball and its downloaded packages are cached under $KITEBENCH_CACHE/vendor-test by the tests.
if ! python3 -c 'import ansible_collections.community.general' 2>/dev/null \
        || ! command -v ansible-playbook >/dev/null || ! command -v ansible-lint >/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check ansible ansible-lint
fi
if ! command -v debootstrap >/dev/null || ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap systemd >/dev/null
fi

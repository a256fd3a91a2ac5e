# PostgreSQL for the results store's tests (tests/test_store*.py run on SQLite and on this).
#
# Sourced by .ci/run (set -euo pipefail). Installs Debian's postgresql when no server binaries
# are there, starts a throwaway server (its own data dir, 127.0.0.1 only, trust auth, run as the
# postgres user), exports KITEBENCH_TEST_PG_URL and stops the server at exit.
_kb_pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$_kb_pg_bin" || ! -x "$_kb_pg_bin/initdb" ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    _kb_pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
_kb_pg_dir="$(mktemp -d /tmp/kitebench-pg.XXXXXX)"
chown postgres "$_kb_pg_dir"
# a free port (another PostgreSQL may already listen on 5432 here)
_kb_pg_port="${KITEBENCH_TEST_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
_kb_pg_as() { runuser -u postgres -- "$@"; }
_kb_pg_as "$_kb_pg_bin/initdb" -D "$_kb_pg_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
_kb_pg_as "$_kb_pg_bin/pg_ctl" -D "$_kb_pg_dir/data" -l "$_kb_pg_dir/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $_kb_pg_port -k $_kb_pg_dir -c fsync=off" start >/dev/null
ci_on_exit "runuser -u postgres -- '$_kb_pg_bin/pg_ctl' -D '$_kb_pg_dir/data' -m fast stop >/dev/null; rm -rf '$_kb_pg_dir'"
_kb_pg_as "$_kb_pg_bin/createdb" -h 127.0.0.1 -p "$_kb_pg_port" -U postgres kitebench_test
export KITEBENCH_TEST_PG_URL="postgresql://postgres@127.0.0.1:$_kb_pg_port/kitebench_test"
echo "::: postgres: $KITEBENCH_TEST_PG_URL ($_kb_pg_bin)"
unset _kb_pg_bin _kb_pg_dir _kb_pg_port; unset -f _kb_pg_as

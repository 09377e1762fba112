# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests of convlab.tune's
# multi-machine path, and export its URL as CONVLAB_TEST_POSTGRES. Source it:
#     source .ci/postgres.sh        (CI does; locally too, as root)
# Installs Debian's postgresql package when no server binaries are present. The server
# runs as the postgres user from a fresh data directory, trusts local connections only,
# and is stopped by convlab_stop_postgres (CI's exit trap).
# A free port unless PG_PORT is given: a server left over from an interrupted run (or any
# other service) on a fixed port would make this one fail to start.
PG_PORT="${PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PG_DATA="$(mktemp -d /tmp/convlab-pg.XXXXXX)"
chown postgres:postgres "$PG_DATA"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA" start >/dev/null
runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres convlab_test
export CONVLAB_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$PG_PORT/convlab_test"
convlab_stop_postgres() {
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PG_DATA"
}
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"

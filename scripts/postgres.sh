# PostgreSQL for the tests and the load script; sourced, not run.
#
#   postgres_answers URL        true when a server answers at URL
#   postgres_for_tests          sets CODITECT_TEST_POSTGRES: the server it
#                               names, else 127.0.0.1:5432 if one answers
#                               there, else a throwaway server
#   postgres_throwaway [OPT…]   starts a throwaway server (initdb into a
#                               temporary folder, trust authentication,
#                               loopback only, a free port; OPT are extra
#                               `-c name=value` settings) and sets
#                               CODITECT_TEST_POSTGRES to it; it is stopped
#                               and deleted when the calling shell exits
#
# A throwaway server needs Debian's `postgresql` package (initdb, pg_ctl);
# it is installed when missing. initdb refuses to run as root, so as root
# the server runs as the `postgres` user the package creates.

postgres_answers() {
    psql "$1" -XAtqc 'SELECT 1' >/dev/null 2>&1
}

postgres_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        echo "postgres.sh: installing Debian's postgresql for a throwaway server" >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql >&2
        dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    echo "$dir"
}

postgres_throwaway() {
    local bin dir port as=()
    bin=$(postgres_bin)
    dir=$(mktemp -d /tmp/coditect-pg.XXXXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    local opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off"
    opts="$opts -c max_connections=300"
    for o in "$@"; do opts="$opts -c $o"; done
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    PG_THROWAWAY_DIR=$dir
    PG_THROWAWAY_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
    trap 'postgres_throwaway_stop' EXIT
    psql "postgresql://postgres@127.0.0.1:$port/postgres" -XAtqc 'CREATE DATABASE test' >/dev/null
    export CODITECT_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/test"
    echo "postgres.sh: throwaway PostgreSQL at $CODITECT_TEST_POSTGRES (data in $dir)" >&2
}

postgres_throwaway_stop() {
    if [ -n "${PG_THROWAWAY_DIR:-}" ]; then
        "${PG_THROWAWAY_STOP[@]}" >/dev/null 2>&1 || true
        rm -rf "$PG_THROWAWAY_DIR"
        PG_THROWAWAY_DIR=""
    fi
}

postgres_for_tests() {
    if [ -n "${CODITECT_TEST_POSTGRES:-}" ]; then
        if ! postgres_answers "$CODITECT_TEST_POSTGRES"; then
            echo "postgres.sh: CODITECT_TEST_POSTGRES=$CODITECT_TEST_POSTGRES does not answer" >&2
            return 1
        fi
        return 0
    fi
    local default="postgresql://postgres@127.0.0.1:5432/test"
    if postgres_answers "$default"; then
        export CODITECT_TEST_POSTGRES=$default
        return 0
    fi
    echo "postgres.sh: no PostgreSQL answers at $default; starting a throwaway one" >&2
    postgres_throwaway
}

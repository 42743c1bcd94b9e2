#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for Barge's tests: its own directory under /tmp, listening on
# 127.0.0.1 only (a free port) and on a unix socket in that directory, trust authentication
# (nothing else can reach it), fsync off (durability is not what the tests check), a pid file,
# and a role and database `barge` for the tests. Machines here have no systemd, so nothing
# else would start PostgreSQL; Debian's own `main` cluster is not used.
#
# Sourced by scripts/test.sh (start_postgres before `cargo test`, stop_postgres on exit), or
# run by hand for `cargo test -p barge-store`:
#
#   eval "$(scripts/test-postgres.sh start)"   # sets BARGE_TEST_DATABASE_URL and BARGE_PG_DIR
#   cargo test --release -p barge-store
#   scripts/test-postgres.sh stop "$BARGE_PG_DIR"
#
# Needs the Debian package `postgresql` (its server binaries under /usr/lib/postgresql/<ver>).
# Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).

# The newest installed server's binaries.
pg_bindir() {
    local d best=""
    # sort -V: version 10 is newer than 9.
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
            best="$d"
        fi
    done
    if [[ -z "$best" ]]; then
        echo "error: no PostgreSQL server found under /usr/lib/postgresql/*/bin; apt-get install postgresql" >&2
        return 1
    fi
    echo "$best"
}

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_pg_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A local TCP port nothing listens on (the server gets another try if it is taken meanwhile).
pick_free_port() {
    local port i
    for i in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "error: no free local port found" >&2
    return 1
}

# start_postgres: creates and starts the cluster; exports BARGE_TEST_DATABASE_URL and
# BARGE_PG_DIR (its directory, for stop_postgres).
start_postgres() {
    local bindir dir port try started=0
    bindir="$(pg_bindir)" || return 1
    dir="$(mktemp -d /tmp/barge-pg.XXXXXX)" || return 1
    BARGE_PG_DIR="$dir"
    export BARGE_PG_DIR
    mkdir -p "$dir/socket"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$dir"
    fi
    # The server's working directory must be one its user can enter.
    if ! (cd "$dir" && as_pg_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
            -E UTF8 --no-sync >"$dir/initdb.log" 2>&1); then
        echo "error: initdb failed:" >&2
        cat "$dir/initdb.log" >&2
        return 1
    fi
    for try in 1 2 3; do
        port="$(pick_free_port)" || return 1
        if (cd "$dir" && as_pg_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
                -w -t 60 -o "-c listen_addresses=127.0.0.1 -c port=$port \
                -c unix_socket_directories=$dir/socket -c external_pid_file=$dir/postgres.pid \
                -c fsync=off -c max_connections=200" start >/dev/null); then
            started=1
            break
        fi
        echo "PostgreSQL did not start on port $port (try $try):" >&2
        tail -n 5 "$dir/postgres.log" >&2 || true
    done
    if [[ $started -ne 1 ]]; then
        echo "error: PostgreSQL did not start; see $dir/postgres.log" >&2
        return 1
    fi
    # CREATEDB: the store's tests make a database per test (and drop it), so they can run in
    # parallel without seeing each other's rows.
    if ! "$bindir/psql" -q -h "$dir/socket" -p "$port" -U postgres -d postgres \
            -v ON_ERROR_STOP=1 \
            -c "CREATE ROLE barge LOGIN CREATEDB" \
            -c "CREATE DATABASE barge OWNER barge" >/dev/null; then
        echo "error: could not create the barge role and database" >&2
        return 1
    fi
    BARGE_TEST_DATABASE_URL="postgres://barge@127.0.0.1:$port/barge"
    export BARGE_TEST_DATABASE_URL
    echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" \
        "(pid $(head -n1 "$dir/postgres.pid"), data in $dir/data)" >&2
}

# stop_postgres [DIR]: stops the cluster (pg_ctl, or its pid file if pg_ctl cannot) and
# removes its directory. Safe to call when nothing was started.
stop_postgres() {
    local dir="${1:-${BARGE_PG_DIR:-}}" bindir pid i
    [[ -n "$dir" && -d "$dir" ]] || return 0
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        bindir="$(pg_bindir 2>/dev/null)" || bindir=""
        if [[ -z "$bindir" ]] || ! (cd "$dir" && as_pg_owner "$bindir/pg_ctl" -D "$dir/data" \
                -m fast -w -t 30 stop >/dev/null 2>&1); then
            pid="$(head -n1 "$dir/postgres.pid" 2>/dev/null || true)"
            if [[ -n "$pid" ]]; then
                kill -TERM "$pid" 2>/dev/null || true
                for i in $(seq 1 50); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -rf "$dir"
    if [[ "${BARGE_PG_DIR:-}" == "$dir" ]]; then
        unset BARGE_PG_DIR
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    case "${1:-}" in
        start)
            start_postgres
            printf 'export BARGE_TEST_DATABASE_URL=%q BARGE_PG_DIR=%q\n' \
                "$BARGE_TEST_DATABASE_URL" "$BARGE_PG_DIR"
            ;;
        stop)
            stop_postgres "${2:?usage: $0 stop DIR}"
            ;;
        *)
            echo "usage: $0 start | stop DIR" >&2
            exit 2
            ;;
    esac
fi

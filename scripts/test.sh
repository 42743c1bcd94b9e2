#!/usr/bin/env bash
# The one command that runs Barge's whole test suite on a fresh Debian machine (as root):
#
#   scripts/test.sh [extra pytest args]
#
# 1. installs missing Debian packages (only when something is missing),
# 2. creates or reuses the virtualenv .venv with the real aws CLI v1, boto3, pytest, requests,
#    prometheus-client (its parser reads /metrics in test_32),
# 3. cargo build --release --workspace,
# 4. starts a throwaway PostgreSQL (scripts/test-postgres.sh: a cluster under /tmp on a free
#    127.0.0.1 port, pid file, stopped and removed when this script exits, also on failure) and
#    exports BARGE_TEST_DATABASE_URL for the store's conformance suite,
# 5. cargo test --release --workspace (unit, property and simulation tests; SIM_SEEDS seeds),
# 6. the end-to-end suite: pytest tests/e2e against the real target/release/barge.
#
# Environment knobs:
#   SIM_SEEDS=N            seeds for the deterministic simulation test (default 3000)
#   SKIP_RUST_TESTS=1      skip steps 4 and 5 (quicker iteration on the e2e suite)
#   BARGE_TEST_DATABASE_URL=postgres://…  use this PostgreSQL (its role needs CREATEDB) instead
#                          of starting one
#   PYTHON=python3         interpreter used to create the virtualenv
#
# Exits non-zero if any step fails, after printing a summary of every step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
export SIM_SEEDS="${SIM_SEEDS:-3000}"

# Loose pins: the aws CLI must stay v1 (v2 is not on PyPI); the rest, current majors.
PY_REQUIREMENTS=("awscli>=1.44,<2" "boto3>=1.40,<2" "pytest>=8,<10" "requests>=2.31,<3" "prometheus-client>=0.20,<1")

declare -a SUMMARY=()
FAILED=0

# start_postgres / stop_postgres (and BARGE_PG_DIR, the cluster's directory once started).
# shellcheck source=scripts/test-postgres.sh
source "$ROOT/scripts/test-postgres.sh"

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# run_step NAME CMD...: runs a step, records PASS/FAIL and its duration; never exits.
run_step() {
    local name="$1"; shift
    local start end rc
    log "$name"
    start=$(date +%s)
    set +e
    "$@"
    rc=$?
    set -e
    end=$(date +%s)
    if [[ $rc -eq 0 ]]; then
        SUMMARY+=("PASS  ${name} ($((end - start)) s)")
    else
        SUMMARY+=("FAIL  ${name} ($((end - start)) s, exit ${rc})")
        FAILED=1
    fi
    return $rc
}

print_summary() {
    printf '\n\033[1m==> Summary\033[0m\n'
    local line
    for line in "${SUMMARY[@]}"; do
        printf '  %s\n' "$line"
    done
    if [[ $FAILED -eq 0 ]]; then
        printf '\nALL TESTS PASSED\n'
    else
        printf '\nSOME STEPS FAILED\n'
    fi
}
# The PostgreSQL this script started never outlives it: stopped on every exit, and an
# interrupt becomes an exit so that this runs then too.
on_exit() {
    if [[ -n "${BARGE_PG_DIR:-}" ]]; then
        echo "stopping the test PostgreSQL"
        stop_postgres
    fi
    print_summary
}
interrupted() {
    SUMMARY+=("FAIL  interrupted by $1")
    FAILED=1
    exit "$2"
}
trap on_exit EXIT
trap 'interrupted SIGINT 130' INT
trap 'interrupted SIGTERM 143' TERM

# ---- 1. system packages --------------------------------------------------------------
install_system_packages() {
    local missing=()
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        :   # the virtualenv exists and works: no Python packages needed
    elif ! command -v "$PYTHON" >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
    elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        # Debian splits venv/ensurepip out of python3; pyenv and others ship them.
        local ver
        ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        if apt-cache show "python${ver}-venv" >/dev/null 2>&1; then
            missing+=("python${ver}-venv")
        else
            missing+=(python3-venv)
        fi
    fi
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)   # rusqlite builds SQLite from source
    command -v sh >/dev/null 2>&1 || missing+=(dash)
    command -v sleep >/dev/null 2>&1 || missing+=(coreutils)
    # The web console's browser tests (crates/barge-console-tests) drive a headless Chromium.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    # The Docker runner's tests import a rootfs of a static busybox as their image: no registry
    # is needed. Only where Docker is installed; without it those tests are skipped.
    if command -v docker >/dev/null 2>&1 && [[ ! -x /bin/busybox ]]; then
        missing+=(busybox-static)
    fi
    # The store's conformance suite runs against a real PostgreSQL server (step 4).
    local pg_create_main=0
    if [[ -z "${BARGE_TEST_DATABASE_URL:-}" ]] \
        && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        missing+=(postgresql)
        pg_create_main=1
    fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "all system packages present"
        return 0
    fi
    echo "installing: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: need root to apt-get install ${missing[*]}" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ $pg_create_main -eq 1 ]]; then
        # Debian would create and start a `main` cluster on port 5432 that nothing uses and
        # nothing stops (there is no systemd here); the tests make their own.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/barge-tests.conf
    fi
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# ---- 2. virtualenv -------------------------------------------------------------------
setup_venv() {
    local stamp="$VENV/.barge-requirements"
    local want
    want="$(printf '%s\n' "${PY_REQUIREMENTS[@]}")"
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "existing .venv is broken; recreating"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$VENV/bin/python" -c 'import boto3, botocore, pytest, requests, awscli, prometheus_client' >/dev/null 2>&1 \
        && [[ -x "$VENV/bin/aws" ]]; then
        echo "reusing $VENV"
    else
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PY_REQUIREMENTS[@]}"
        printf '%s\n' "$want" >"$stamp"
    fi
    "$VENV/bin/aws" --version
    "$VENV/bin/python" -c 'import boto3, pytest; print("boto3", boto3.__version__, "pytest", pytest.__version__)'
}

[[ -d "$HOME/.cargo/bin" ]] && PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null 2>&1 || {
    echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
    SUMMARY+=("FAIL  toolchain (cargo missing)"); FAILED=1; exit 1;
}

run_step "system packages" install_system_packages || exit 1
run_step "python virtualenv (.venv: awscli v1, boto3, pytest, requests)" setup_venv || exit 1
run_step "cargo build --release --workspace" cargo build --release --workspace || exit 1

if [[ "${SKIP_RUST_TESTS:-0}" != "1" ]]; then
    if [[ -n "${BARGE_TEST_DATABASE_URL:-}" ]]; then
        SUMMARY+=("SKIP  start PostgreSQL (BARGE_TEST_DATABASE_URL given)")
    else
        # If it cannot start, the store's PostgreSQL tests fail and say so; the rest still run.
        run_step "start PostgreSQL (throwaway cluster for the store's conformance suite)" \
            start_postgres || true
    fi
    # A failure here is reported, but the e2e suite still runs so one run shows everything.
    run_step "cargo test --release --workspace (SIM_SEEDS=${SIM_SEEDS})" \
        cargo test --release --workspace || true
else
    SUMMARY+=("SKIP  cargo test (SKIP_RUST_TESTS=1)")
fi

e2e() {
    BARGE_BIN="$ROOT/target/release/barge" PATH="$VENV/bin:$PATH" \
        "$VENV/bin/python" -m pytest -q tests/e2e "$@"
}
run_step "end-to-end: pytest tests/e2e (real barge, aws CLI v1, boto3)" e2e "$@" || true

exit "$FAILED"

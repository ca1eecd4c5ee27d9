# shellcheck shell=bash
# Shared helpers for the scripts in this directory. Source it:
#
#   # shellcheck source=scripts/lib.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Functions:
#   repo_root            print the repository root (the parent of this scripts/ directory)
#   log MSG…             progress message on stderr, prefixed with the calling script's name
#   warn MSG…            warning on stderr
#   die MSG…             error on stderr, then exit 1
#   ensure_services      start the local Postgres and Redis if they are not answering, wait until they answer
#   ensure_dev_secret    create .dev/jwt_secret (48 random bytes, base64, mode 600) if missing
#   dev_secret_path      print the path of .dev/jwt_secret (whether or not it exists)
#   spin_variable_default NAME  print the `default` of variable NAME in spin.toml's [variables] (empty if none)

if [[ -n "${ORCH_LIB_SH_LOADED:-}" ]]; then
    return 0
fi
ORCH_LIB_SH_LOADED=1

_orch_lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

repo_root() {
    (cd "$_orch_lib_dir/.." && pwd -P)
}

_orch_script_name() {
    local top="${BASH_SOURCE[${#BASH_SOURCE[@]}-1]}"
    basename "${top:-script}"
}

log() {
    printf '[%s] %s\n' "$(_orch_script_name)" "$*" >&2
}

warn() {
    printf '[%s] warning: %s\n' "$(_orch_script_name)" "$*" >&2
}

die() {
    printf '[%s] error: %s\n' "$(_orch_script_name)" "$*" >&2
    exit 1
}

# Poll a command until it succeeds or about TIMEOUT seconds have passed (ten tries a second).
_orch_wait_for() {
    local timeout="$1"
    shift
    local tries=$((timeout * 10))
    while ((tries > 0)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

_orch_postgres_up() {
    pg_isready -h 127.0.0.1 -q
}

_orch_redis_up() {
    [[ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" == "PONG" ]]
}

# Start the machine's local Postgres and Redis when they do not answer, with the machine's own start commands,
# then wait up to ORCH_SERVICE_TIMEOUT seconds (default 20) for each. Returns non-zero if one stays down.
ensure_services() {
    local timeout="${ORCH_SERVICE_TIMEOUT:-20}"
    local failed=0

    if ! _orch_postgres_up; then
        log "Postgres is not answering on 127.0.0.1; starting it"
        local cluster
        # shellcheck disable=SC2012  # one directory per installed major version; names are plain numbers
        cluster="$(ls /etc/postgresql 2>/dev/null | head -n 1)"
        if [[ -z "$cluster" ]]; then
            warn "no cluster under /etc/postgresql; cannot start Postgres"
        else
            pg_ctlcluster --skip-systemctl-redirect "$cluster" main start >&2 || true
        fi
        if _orch_wait_for "$timeout" _orch_postgres_up; then
            log "Postgres is up"
        else
            warn "Postgres did not answer within ${timeout}s"
            failed=1
        fi
    fi

    if ! _orch_redis_up; then
        log "Redis is not answering on 127.0.0.1; starting it"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 || true
        if _orch_wait_for "$timeout" _orch_redis_up; then
            log "Redis is up"
        else
            warn "Redis did not answer within ${timeout}s"
            failed=1
        fi
    fi

    return "$failed"
}

dev_secret_path() {
    printf '%s/.dev/jwt_secret\n' "$(repo_root)"
}

# The development JWT secret: 48 random bytes, base64 (64 characters, comfortably over HS256's 32-byte minimum).
# Written once, never overwritten (also not by a concurrent caller); .dev/ is git-ignored.
ensure_dev_secret() {
    local path dir tmp
    path="$(dev_secret_path)"
    dir="$(dirname "$path")"
    if [[ -s "$path" ]]; then
        return 0
    fi
    mkdir -p "$dir"
    chmod 700 "$dir"
    tmp="$(mktemp "$dir/.jwt_secret.XXXXXX")" || die "cannot create a file in $dir"
    chmod 600 "$tmp"
    if ! head -c 48 /dev/urandom | base64 | tr -d '\n' >"$tmp" || [[ ! -s "$tmp" ]]; then
        rm -f "$tmp"
        die "could not write $path"
    fi
    # A hard link is created atomically and never replaces an existing file: the first writer wins.
    if [[ -e "$path" ]] && [[ ! -s "$path" ]]; then
        rm -f "$path"   # an empty leftover is useless
    fi
    if ln "$tmp" "$path" 2>/dev/null; then
        log "created $path"
    fi
    rm -f "$tmp"
    [[ -s "$path" ]] || die "could not write $path"
}

# The `default` of a variable in spin.toml's [variables] table, e.g. for `database_url`
#   database_url = { default = "postgres://postgres@127.0.0.1:5432/orchestrator" }
spin_variable_default() {
    local manifest
    manifest="$(repo_root)/spin.toml"
    [[ -f "$manifest" ]] || return 0
    sed -n '/^[[:space:]]*\[variables\][[:space:]]*\(#.*\)\{0,1\}$/,/^[[:space:]]*\[/{
        s/^[[:space:]]*'"$1"'[[:space:]]*=.*default[[:space:]]*=[[:space:]]*"\([^"]*\)".*$/\1/p
    }' "$manifest" | head -n 1
}

# The components, as spin.toml builds them, and the host.
APP_COMPONENTS=(supervisor resources jobs platform)

build_components() {
    local packages=()
    local component
    for component in "${APP_COMPONENTS[@]}" "$@"; do packages+=(-p "$component"); done
    log "building components: ${APP_COMPONENTS[*]} $*"
    (cd "$(repo_root)" && cargo build --quiet --target wasm32-wasip2 --release "${packages[@]}")
}

# The native packages: everything but the WebAssembly components.
NATIVE_PACKAGES=(--workspace --exclude supervisor --exclude resources --exclude jobs --exclude platform --exclude probe)

# The host is built as part of the tests' build: the same packages give the same features, so the
# long wasmtime build happens once, whether `scripts/test` or another script comes first.
build_host() {
    log "building the host"
    (cd "$(repo_root)" && cargo test --quiet --profile host --no-run "${NATIVE_PACKAGES[@]}")
}

build_app() {
    build_components "$@"
    build_host
}

host_binary() {
    printf '%s/host/spin-host\n' "${CARGO_TARGET_DIR:-$(repo_root)/target}"
}

"""The app served by the host on a free loopback port, against a database of its own: what the
benchmark and the OpenAPI conformance run both need (scripts/bench, scripts/schemathesis)."""

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"


def run(command, **kwargs):
    return subprocess.run(command, check=True, text=True, **kwargs)


def prepare(no_build):
    """Services up, the development secret written and (unless `no_build`) the builds fresh; returns
    the host binary, the components' folder and the development secret."""
    steps = "ensure_services && ensure_dev_secret" + ("" if no_build else " && build_app")
    run(["bash", "-c", f". scripts/lib.sh && {steps}"], cwd=REPO)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    secret = (REPO / ".dev" / "jwt_secret").read_text().strip()
    return target / "host" / "spin-host", target / "wasm32-wasip2" / "release", secret


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database(name, until=None):
    """Drops `name` if it exists, creates and migrates it (up to `until`), and returns its URL."""
    drop_database(name)
    # As under `spin up`, a URL without `sslmode` would negotiate TLS and verify the certificate.
    url = f"{SERVER}/{name}?sslmode=disable"
    migrate = [str(REPO / "scripts" / "migrate"), "--database-url", url, *(["--until", until] if until else [])]
    run(migrate, stdout=subprocess.DEVNULL)
    return url


def drop_database(name):
    run(["psql", "-q", f"{SERVER}/postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
        stdout=subprocess.DEVNULL)


def forget_redis_keys(database_url):
    """Deletes the app's Redis keys. They are namespaced by a digest of the database URL; this must
    derive the prefix exactly as `Keyspace::for_database` in components/core/src/keyspace.rs does."""
    prefix = "orchestrator:" + hashlib.sha256(database_url.encode()).hexdigest()[:16]
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}:*"], check=True, text=True,
                          capture_output=True).stdout.split()
    for start in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "DEL", *keys[start:start + 500]], check=True, stdout=subprocess.DEVNULL)


def token(secret, *claims):
    """A bearer token from scripts/token with the given flags (e.g. `--workspace`, `--ttl`)."""
    env = {**os.environ, "SPIN_VARIABLE_JWT_SECRET": secret}
    return run([str(REPO / "scripts" / "token"), *claims], env=env, capture_output=True).stdout.strip()


class Host:
    """The host serving spin.toml on a free loopback port, with the given Spin variables (by their
    names in spin.toml) and extra flags; it is healthy once the constructor returns."""

    def __init__(self, binary, database_url, secret, extra=(), variables=None, log=None):
        """`log`: a file for the host's request log (one line per request, with the Postgres
        statements and Redis commands it made); without it the host runs `--quiet`."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["SPIN_VARIABLE_DATABASE_URL"] = database_url
        env["SPIN_VARIABLE_JWT_SECRET"] = secret
        env.update({f"SPIN_VARIABLE_{name.upper()}": value for name, value in (variables or {}).items()})
        self.process = subprocess.Popen(
            [str(binary), "--manifest", str(REPO / "spin.toml"), "--listen", f"127.0.0.1:{self.port}",
             *([] if log else ["--quiet"]), *extra], env=env,
            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit("the host exited on start-up")
            try:
                with urllib.request.urlopen(f"{self.url}/api/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        sys.exit("the host did not become healthy within 60 s")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

//! The app served by separate host *processes* (the `spin-host` binary, as `scripts/up` and
//! `scripts/bench` run it) and a throwaway PgBouncer in front of Postgres: what a test of a
//! scaled-out deployment on one machine needs. Each process is killed when its guard drops, on a
//! panic too, and its output goes to a log file whose tail a failing test prints.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a host process may take to answer its health check (it compiles nothing: the
/// components' machine code is cached next to their `.wasm`).
const HOST_START: Duration = Duration::from_secs(60);
/// How long PgBouncer may take to accept a connection.
const PGBOUNCER_START: Duration = Duration::from_secs(10);
/// How often a process that lost its spare port to another is started again on another.
const START_ATTEMPTS: usize = 3;

/// A directory of one test's logs and configuration under the system's temporary directory:
/// removed on drop, or kept (and its path printed) when the test panicked.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn create(what: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{what}-{}", crate::unique()));
        std::fs::create_dir_all(&path).expect("a scratch directory");
        Self { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound and let go): a process started on it
/// next that finds it taken after all is started again on another.
pub fn spare_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("its address").port()
}

/// The `host:port` of a `postgres://user@host:port/db?…` URL: what `database_host` (and so
/// `allowed_outbound_hosts`) must name for the app to reach it.
pub fn host_and_port(url: &str) -> &str {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A log file for a child's standard output and error.
fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let copy = file.try_clone().expect("a second handle on the log");
    (Stdio::from(file), Stdio::from(copy))
}

/// The `spin-host` binary built with the profile of the running test (`target/<profile>/spin-host`,
/// beside the test binary's `deps/`). `scripts/test` builds it with the tests; `cargo test` of this
/// package alone does not (it links the host as a library).
pub fn host_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in target/<profile>/deps");
    let binary = profile_dir.join("spin-host");
    assert!(
        binary.is_file(),
        "no host binary at {}: build it with `bash -c '. scripts/lib.sh; build_host'` \
         (scripts/test does)",
        binary.display()
    );
    binary
}

/// What one host process serves `spin.toml` with.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The Postgres the app uses; `database_host` is set to its `host:port`.
    pub database_url: String,
    pub events_channel: String,
    /// `--postgres-pool-size`: Spin's pool holds 64 per process.
    pub postgres_pool_size: usize,
    /// Further Spin variables, by their names in `spin.toml` (e.g. `depth_quotas`).
    pub variables: Vec<(String, String)>,
}

/// One `spin-host` process serving the app on a spare loopback port; killed on drop.
pub struct HostProcess {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub log: PathBuf,
    child: Child,
}

impl HostProcess {
    /// Starts the host binary with `config` (no `SPIN_VARIABLE_*` of the test's own environment
    /// reaches it) and returns once it answers `GET /api/health` with 200. Its output goes to `log`.
    pub async fn start(config: &HostConfig, log: PathBuf) -> Self {
        let binary = host_binary();
        let http = crate::client();
        for attempt in 1..=START_ATTEMPTS {
            let port = spare_port();
            let mut command = Command::new(&binary);
            command
                .arg("--manifest")
                .arg(crate::repo_root().join("spin.toml"))
                .args(["--listen", &format!("127.0.0.1:{port}"), "--quiet"])
                .args(["--max-instances", "64"])
                .args([
                    "--postgres-pool-size",
                    &config.postgres_pool_size.to_string(),
                ]);
            // As `spawn_app`: `TEST_INSTANCE_REUSE=off` gives every request a fresh instance.
            if std::env::var("TEST_INSTANCE_REUSE").as_deref() == Ok("off") {
                command.args([
                    "--max-instance-reuse-count",
                    "1",
                    "--max-instance-concurrent-reuse-count",
                    "1",
                ]);
            }
            for (name, _) in std::env::vars() {
                if name.starts_with("SPIN_VARIABLE_") {
                    command.env_remove(name);
                }
            }
            let variables = [
                ("database_url", config.database_url.as_str()),
                ("database_host", host_and_port(&config.database_url)),
                ("redis_url", crate::REDIS),
                ("redis_host", host_and_port(crate::REDIS)),
                ("jwt_secret", crate::SECRET),
                ("events_channel", config.events_channel.as_str()),
            ];
            let extra = config
                .variables
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()));
            for (name, value) in variables.into_iter().chain(extra) {
                command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
            }
            let (stdout, stderr) = log_file(&log);
            let child = command
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut host = Self {
                address: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
                child,
            };
            let healthy = async || {
                let health = http
                    .get(format!("{}/api/health", host.address))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                health.is_ok_and(|response| response.status() == 200)
            };
            let waiting = Starting {
                what: "the host",
                port,
                log: &log,
                within: HOST_START,
                last_attempt: attempt == START_ATTEMPTS,
            };
            if waiting.until_serving(&mut host.child, healthy).await {
                return host;
            }
        }
        unreachable!("the last attempt panics or returns")
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of {} ({}):\n{}",
                self.address,
                self.log.display(),
                log_tail(&self.log, 15)
            );
        }
    }
}

/// A PgBouncer of the test's own on a spare loopback port, in front of the shared Postgres for one
/// database, with its configuration and log in a directory of the test's; killed on drop.
pub struct PgBouncer {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// The binary: `$PGBOUNCER` if set, else the one `scripts/setup` builds under `target/`, else
    /// one on `PATH`. Panics when there is none, naming what builds it.
    pub fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("PGBOUNCER") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "PGBOUNCER={} is no file", path.display());
            return path;
        }
        let on_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        std::iter::once(crate::repo_root().join("target/pgbouncer/bin"))
            .chain(on_path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|path| path.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "pgbouncer is not installed (looked at $PGBOUNCER, target/pgbouncer and PATH): \
                     scripts/setup builds it"
                )
            })
    }

    /// `(major, minor)` of a PgBouncer binary, from `pgbouncer --version` ("PgBouncer 1.18.0").
    fn version_of(binary: &Path) -> (u32, u32) {
        let output = Command::new(binary)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let text = String::from_utf8_lossy(&output.stdout);
        let number = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no version in {text:?}"));
        let mut parts = number.split('.').map(|part| part.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor),
            _ => panic!("no version in {text:?}"),
        }
    }

    /// Starts `binary` in `pool_mode = transaction` for `database` on the shared server, with at
    /// most `server_connections` connections to Postgres (`default_pool_size` and
    /// `max_db_connections`), keeping the named prepared statements Spin's driver makes
    /// (`max_prepared_statements`); returns once it serves a query. Writes `pgbouncer.ini` and its
    /// log into `dir`. Panics on a PgBouncer before 1.21, which loses those statements in
    /// transaction mode under concurrency (see `tests/scale_out.rs`).
    pub async fn start(binary: &Path, database: &str, server_connections: u32, dir: &Path) -> Self {
        let (major, minor) = Self::version_of(binary);
        assert!(
            (major, minor) >= (1, 21),
            "{}: PgBouncer {major}.{minor} loses Spin's named prepared statements in transaction \
             mode (1.21 or later keeps them): scripts/setup builds one",
            binary.display()
        );
        let server = host_and_port(crate::SERVER);
        let (server_host, server_port) = server.rsplit_once(':').expect("host:port");
        let user = crate::SERVER
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map_or("postgres", |(user, _)| user);
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n"))
            .expect("the userlist");
        for attempt in 1..=START_ATTEMPTS {
            let port = spare_port();
            let mut ini = format!(
                "[databases]\n\
                 {database} = host={server_host} port={server_port} dbname={database}\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {userlist}\n\
                 admin_users = {user}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_connections}\n\
                 max_db_connections = {server_connections}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 400\n\
                 server_tls_sslmode = disable\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n\
                 max_prepared_statements = 200\n",
                userlist = dir.join("userlist.txt").display(),
            );
            // PgBouncer refuses to run as root; it drops to `user` after reading its files.
            if is_root() {
                ini.push_str("user = postgres\n");
            }
            let config = dir.join("pgbouncer.ini");
            std::fs::write(&config, ini).expect("pgbouncer.ini");
            let log = dir.join("pgbouncer.log");
            let (stdout, stderr) = log_file(&log);
            let mut child = Command::new(binary)
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let waiting = Starting {
                what: "pgbouncer",
                port,
                log: &log,
                within: PGBOUNCER_START,
                last_attempt: attempt == START_ATTEMPTS,
            };
            if waiting
                .until_serving(&mut child, async || answers(port, database).await)
                .await
            {
                return Self { port, log, child };
            }
        }
        unreachable!("the last attempt panics or returns")
    }

    /// The URL of `database` through this PgBouncer, in plain TCP.
    pub fn url(&self, database: &str) -> String {
        url_through(self.port, database)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of pgbouncer ({}):\n{}",
                self.log.display(),
                log_tail(&self.log, 15)
            );
        }
    }
}

/// The client connections the PgBouncer on `port` holds for `database` now (`SHOW CLIENTS` on
/// its admin console).
pub async fn pgbouncer_clients(port: u16, database: &str) -> anyhow::Result<usize> {
    let admin = format!("postgres://postgres@127.0.0.1:{port}/pgbouncer?sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let messages = client.simple_query("SHOW CLIENTS").await?;
    let clients = messages
        .iter()
        .filter(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get("database") == Some(database),
            _ => false,
        })
        .count();
    drop(client);
    let _ = connection.await;
    Ok(clients)
}

/// The URL of `database` through the PgBouncer on `port`.
fn url_through(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}?sslmode=disable")
}

/// Whether a query through the PgBouncer on `port` to `database` answers.
async fn answers(port: u16, database: &str) -> bool {
    let Ok(Ok((client, connection))) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_postgres::connect(&url_through(port, database), tokio_postgres::NoTls),
    )
    .await
    else {
        return false;
    };
    let connection = tokio::spawn(connection);
    let answered = client.simple_query("SELECT 1").await.is_ok();
    drop(client);
    let _ = connection.await;
    answered
}

/// A child process started on a spare port, being waited for.
struct Starting<'a> {
    what: &'static str,
    port: u16,
    log: &'a Path,
    within: Duration,
    /// Whether a lost port is the end (no attempt left) rather than a reason to try another.
    last_attempt: bool,
}

impl Starting<'_> {
    /// Polls `serving` until it says yes (`true`), or the child exits because another process took
    /// its port (`false`: start it again on another). Panics when it exits for any other reason, or
    /// does not serve within `within`, with its log's tail.
    async fn until_serving(
        &self,
        child: &mut Child,
        mut serving: impl AsyncFnMut() -> bool,
    ) -> bool {
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("the child's status") {
                let tail = log_tail(self.log, 20);
                if !self.last_attempt && tail.contains("in use") {
                    return false;
                }
                panic!("{} exited on start-up ({status}):\n{tail}", self.what);
            }
            if serving().await {
                return true;
            }
            assert!(
                started.elapsed() < self.within,
                "{} on port {} did not serve within {:?}:\n{}",
                self.what,
                self.port,
                self.within,
                log_tail(self.log, 20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether the tests run as root (`id -u` says 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Deletes the Redis keys of the app reached at `database_url` on drop, as [`crate::TestDatabase`]
/// does for its own URL: an app that reaches the database another way (through PgBouncer) has keys
/// of another prefix.
pub struct ForgetRedisKeys(pub String);

impl Drop for ForgetRedisKeys {
    fn drop(&mut self) {
        let url = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::forget_redis_keys(&url));
            std::io::Result::Ok(())
        })
        .join();
    }
}

//! The test harness: [`spawn_app`] serves `spin.toml` through the host on a
//! free port, against a database of its own that is dropped afterwards.

use orchestrator_core::auth::{Claims, Scope, encode_hs256};
use reqwest::{Method, RequestBuilder, Response};
use spin_host::{App, AppOptions, Running};
use std::path::PathBuf;

pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long!";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A migrated database that exists for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("test_{}", unique());
        let url = format!("{SERVER}/{name}");
        let output = tokio::process::Command::new(repo_root().join("scripts/migrate"))
            .args(["--database-url", &url])
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "scripts/migrate failed for {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Self { name, url })
    }

    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; a thread of its own may block.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&format!("{SERVER}/postgres"), tokio_postgres::NoTls)
                        .await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// A process-wide unique suffix for names (databases, channels, keys).
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestApp {
    pub address: String,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    _running: Running,
}

/// Serves the app for one test with its own database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|options| options).await
}

/// Like [`spawn_app`], with extra variable overrides.
pub async fn spawn_app_with(configure: impl FnOnce(AppOptions) -> AppOptions) -> TestApp {
    let db = TestDatabase::create().await.expect("test database");
    let mut options = AppOptions::new(repo_root().join("spin.toml"))
        .variable("database_url", &db.url)
        .variable("jwt_secret", SECRET)
        .variable("events_channel", format!("test.events.{}", unique()));
    options.use_environment = false;
    options.max_instances = 64;
    options.postgres_pool_size = 8;
    let app = App::load(&configure(options)).expect("the app loads (are the components built?)");
    let running = app
        .serve("127.0.0.1:0".parse().unwrap(), false)
        .await
        .expect("serve");
    TestApp {
        address: format!("http://{}", running.addr),
        db,
        http: reqwest::Client::new(),
        _running: running,
    }
}

/// A token with the given scopes, for `sub` "tester", valid for an hour.
pub fn token(scopes: &[Scope], workspace: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sign(Claims {
        sub: "tester".into(),
        exp: now + 3600,
        iat: Some(now),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        workspace_id: workspace.map(|w| w.parse().expect("workspace id")),
        ..Default::default()
    })
}

pub fn sign(claims: Claims) -> String {
    encode_hs256(&claims, SECRET.as_bytes()).expect("token")
}

pub fn all_scopes() -> Vec<Scope> {
    Scope::ALL.to_vec()
}

impl TestApp {
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.address));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .expect("request")
    }
}

/// The status and JSON body of a response.
pub async fn parts(response: Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Asserts an error response has the contract's shape and code.
pub async fn assert_error(response: Response, status: u16, code: &str) -> serde_json::Value {
    let (actual, body) = parts(response).await;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(body["detail"], body["error"]["message"], "{body}");
    body
}

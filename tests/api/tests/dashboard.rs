//! The operator dashboard (`GET /`) in a real headless Chromium, driven through chromedriver's
//! W3C WebDriver HTTP API: signing in with a pasted token or a service account's credentials,
//! panels that follow the live event stream without a reload, and errors shown, not swallowed.
//!
//! Chromium and chromedriver come from the Debian packages `chromium` and `chromium-driver`
//! (`scripts/setup` installs them); without them these tests fail, they do not skip.

use api_tests::{TestApp, parts, repo_root, spawn_app_with, token, unique};
use base64::Engine;
use orchestrator_core::auth::Scope;
use orchestrator_core::ids::WorkspaceId;
use reqwest::Method;
use serde_json::{Value, json};
use service_account::{Account, upsert};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long one WebDriver command may take (starting Chromium is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Where the page keeps its token.
const TOKEN_KEY: &str = "orchestrator.dashboard.token";

/// What the dashboard reads: workers, jobs and quotas, across workspaces.
fn reader() -> Vec<Scope> {
    vec![Scope::SupervisorRead, Scope::JobsRead, Scope::ResourcesRead]
}

/// `name` on `PATH`, or a failure that says how to get it.
fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed; run scripts/setup (it installs the Debian packages \
                 chromium and chromium-driver that the dashboard tests need)"
            )
        })
}

/// A chromedriver on a free loopback port, shut down (with the browsers it started) on drop.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    async fn start() -> Self {
        let binary = program("chromedriver");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self { child, port };
        let status = format!("http://127.0.0.1:{port}/status");
        let started = Instant::now();
        loop {
            let ready = match reqwest::get(&status).await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return driver;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "chromedriver is not ready on port {port} after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// chromedriver's own way out: it quits every session's browser, then exits. Drop cannot
    /// await, so this speaks HTTP over a plain socket.
    fn shutdown(&self) -> std::io::Result<()> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map(drop)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.shutdown();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser profile for one session, removed after the browser is gone.
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One WebDriver session in a headless Chromium.
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    // Dropped in this order: the driver takes the browser down before its profile is removed.
    _driver: Chromedriver,
    _profile: Profile,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let chromium = program("chromium");
        let driver = Chromedriver::start().await;
        let profile = Profile(std::env::temp_dir().join(format!("dashboard-test-{}", unique())));
        std::fs::create_dir_all(&profile.0).expect("a profile directory");
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--lang=en-US",
                    format!("--user-data-dir={}", profile.0.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let url = format!("http://127.0.0.1:{}/session", driver.port);
        let created = webdriver(http.post(&url).json(&capabilities), "new session").await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"));
        Self {
            session: format!("{url}/{id}"),
            http,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        // W3C WebDriver wants a JSON object on every POST, even one without parameters.
        let request = match (method, body) {
            (_, Some(body)) => request.json(&body),
            (Method::POST, None) => request.json(&json!({})),
            (_, None) => request,
        };
        webdriver(request, path).await
    }

    async fn open(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let body = json!({"using": "css selector", "value": css});
        let found = self.command(Method::POST, "/element", Some(body)).await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
            .to_owned()
    }

    /// Types `text` into the input `css` as a person would, key by key.
    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = format!("/element/{element}/value");
        self.command(Method::POST, &path, Some(json!({ "text": text })))
            .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(Method::POST, &format!("/element/{element}/click"), None)
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    async fn run(&self, script: &str, args: Value) -> Value {
        let body = json!({"script": script, "args": args});
        self.command(Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Polls `script` until it returns `{done: true, ...}`; fails after [`PATIENCE`] with its last
    /// answer, what the page says about itself, and a screenshot.
    async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let answer = self.run(script, args.clone()).await;
            if answer["done"] == true {
                return answer;
            }
            if started.elapsed() > PATIENCE {
                let page = self.run(PAGE_STATE, json!([])).await;
                self.screenshot("target/dashboard-failure.png").await;
                panic!(
                    "{what}: not within {PATIENCE:?}; last check {answer}; the page: {page} \
                     (screenshot in target/dashboard-failure.png)"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport at `path`, relative to the repository.
    async fn screenshot(&self, path: &str) -> PathBuf {
        let encoded = self.command(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("base64");
        let path = repo_root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).expect("target/");
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    async fn resize(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        self.command(Method::POST, "/window/rect", Some(rect)).await;
    }
}

/// Sends a WebDriver command and returns its `value`, failing with the driver's own error.
async fn webdriver(request: reqwest::RequestBuilder, what: &str) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {what}: {e}"));
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {what}: {status}, not JSON: {e}"));
    assert!(
        status.is_success(),
        "WebDriver {what}: {status}: {}",
        body["value"]["message"]
    );
    body["value"].clone()
}

/// What the page says about itself, for a failure's message.
const PAGE_STATE: &str = r##"
const text = (id) => document.getElementById(id)?.textContent ?? null;
return {
  status: text("status"),
  identity: text("identity"),
  signed_in: !document.getElementById("board").hidden,
  feed_state: text("feed-state"),
  feed_items: document.querySelectorAll("#feed li").length,
};
"##;

/// Signed in, and every panel loaded once.
const LOADED: &str = r##"
const board = document.getElementById("board");
const done = !board.hidden
  && document.querySelectorAll("#quota li").length === 6
  && document.querySelectorAll("#worker-counts li").length === 6
  && document.getElementById("job-total").textContent !== "";
return { done, status: document.getElementById("status").textContent };
"##;

/// The feed's stream is open.
const LIVE: &str = r##"
const state = document.getElementById("feed-state").dataset.state;
return { done: state === "live", state };
"##;

/// The feed's stream is open, resumed after the event with seq `arguments[0]`.
const RESUMED: &str = r##"
const state = document.getElementById("feed-state");
return { done: state.dataset.state === "live" && state.dataset.after === arguments[0],
         after: state.dataset.after ?? null };
"##;

/// The sign-in form is showing, and the status line says `arguments[0]`.
const SIGNED_OUT_SAYING: &str = r##"
const status = document.getElementById("status").textContent;
const done = !document.getElementById("sign-in-panel").hidden
  && document.getElementById("board").hidden
  && status.includes(arguments[0]);
return { done, status };
"##;

/// What the page shows of `arguments[0]` (workers), `[1]` (jobs, each `[id, parent]`) and
/// `[2]` (events, each `[type, subject id]`); `done` once all of it is there.
const SHOWS: &str = r##"
const [workers, jobs, events] = arguments;
const missing = [];
const rows = [...document.querySelectorAll("#workers tr")];
for (const [id, status] of workers) {
  const row = rows.find((r) => r.dataset.workerId === id);
  if (!row) missing.push(`worker ${id}`);
  else if (!row.textContent.includes(status)) missing.push(`worker ${id} ${status}: ${row.textContent}`);
}
const items = [...document.querySelectorAll("#jobs li")];
for (const [id, status, parent] of jobs) {
  const item = items.find((li) => li.dataset.jobId === id);
  if (!item) { missing.push(`job ${id}`); continue; }
  if (item.dataset.status !== status) missing.push(`job ${id} ${status}: ${item.dataset.status}`);
  const above = item.parentElement.closest("li");
  if ((above?.dataset.jobId ?? null) !== parent) missing.push(`job ${id} under ${parent}`);
}
const feed = [...document.querySelectorAll("#feed li")];
for (const [type, subject] of events) {
  if (!feed.some((li) => li.dataset.type === type && (subject === null || li.dataset.subject === subject))) {
    missing.push(`event ${type} ${subject}`);
  }
}
const depth0 = document.querySelector('#quota li[data-depth="0"]')?.textContent ?? "";
if (!depth0.includes(arguments[3])) missing.push(`depth 0 "${arguments[3]}": ${depth0}`);
return {
  done: missing.length === 0,
  missing,
  seqs: feed.map((li) => Number(li.dataset.seq)),
  total: document.getElementById("worker-total").textContent,
};
"##;

/// Serves the app with streams that end every two seconds, so that the page must resume them
/// (with `Last-Event-ID`) while the test runs.
async fn app() -> TestApp {
    spawn_app_with(|options| options.variable("events_stream_seconds", "2")).await
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let writer = token(
        &[
            Scope::SupervisorWrite,
            Scope::JobsWrite,
            Scope::ResourcesWrite,
        ],
        None,
    );
    let (status, body) = parts(app.post(path, &writer, body).await).await;
    assert!(status == 200 || status == 201, "{path}: {status} {body}");
    body
}

fn id(object: &Value) -> String {
    object["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn the_page_is_served_self_contained_with_a_strict_policy() {
    let app = app().await;
    let response = app.send_anonymous(Method::GET, "/").await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    let page = response.text().await.unwrap();
    // Nothing fetched from elsewhere: the page works offline, next to the API alone.
    assert!(!page.contains("://"), "the page names another origin");
    assert!(page.contains(r#"id="feed" aria-live="polite""#));
}

#[tokio::test]
async fn a_pasted_token_shows_workers_and_jobs_as_they_happen() {
    let started = Instant::now();
    let browser = Browser::start(1280, 900).await;
    let app = app().await;
    browser.open(&format!("{}/", app.address)).await;
    let operator = token(&reader(), None);
    browser.type_into("#token", &operator).await;
    browser.click("#sign-in").await;
    browser.wait_for("the panels load", LOADED, json!([])).await;
    browser
        .wait_for("the live feed connects", LIVE, json!([]))
        .await;

    // The token lives in this tab's sessionStorage only, and the form keeps no copy.
    let kept = browser
        .run(
            "return {session: sessionStorage.getItem(arguments[0]), local: localStorage.length, \
             cookies: document.cookie, url: location.href, field: document.getElementById('token').value};",
            json!([TOKEN_KEY]),
        )
        .await;
    assert_eq!(kept["session"], operator.as_str());
    assert_eq!(kept["local"], 0, "{kept}");
    assert_eq!(kept["cookies"], "", "{kept}");
    assert_eq!(kept["url"], format!("{}/", app.address), "{kept}");
    assert_eq!(kept["field"], "", "{kept}");

    // Changes through the API, not the browser: the page learns of them from the stream alone.
    let busy = id(&created(
        &app,
        "/api/supervisor/workers",
        json!({"metadata": {"gpu": "a100"}}),
    )
    .await);
    created(
        &app,
        &format!("/api/supervisor/workers/{busy}/start"),
        json!({}),
    )
    .await;
    let idle = id(&created(&app, "/api/supervisor/workers", json!({})).await);
    let parent = id(&created(
        &app,
        "/api/jobs/submit",
        json!({"task_description": "Index the design documents", "worker_count": 3}),
    )
    .await);
    let child = id(&created(
        &app,
        "/api/jobs/submit",
        json!({"task_description": "Summarise chapter one", "worker_count": 1, "depth": 1,
               "parent_job_id": parent}),
    )
    .await);
    created(
        &app,
        "/api/resources/allocate",
        json!({"job_id": parent, "depth": 0, "worker_count": 2}),
    )
    .await;

    let expected = json!([
        [[busy, "RUNNING"], [idle, "IDLE"]],
        [[parent, "RUNNING", null], [child, "PENDING", parent]],
        [
            ["worker.registered", busy],
            ["worker.state.changed", busy],
            ["worker.registered", idle],
            ["job.submitted", parent],
            ["job.submitted", child],
            ["job.state.changed", parent],
            ["resources.allocated", null],
        ],
        "2 of 10",
    ]);
    let shown = browser
        .wait_for("the new workers, jobs and events show", SHOWS, expected)
        .await;
    assert_eq!(shown["total"], "2 workers", "{shown}");

    // Every event once, newest first, across the streams the server ended meanwhile.
    let mut stored: Vec<i64> = app.events().await.iter().map(|e| e.seq).collect();
    stored.reverse();
    let seqs: Vec<i64> = serde_json::from_value(shown["seqs"].clone()).unwrap();
    assert_eq!(seqs, stored, "the feed against the outbox");

    // The server ends each stream after two seconds; the page resumes after the last event it
    // saw, and what happens next shows once.
    let last = stored[0].to_string();
    browser
        .wait_for("a resumed stream", RESUMED, json!([last]))
        .await;
    created(
        &app,
        &format!("/api/supervisor/workers/{busy}/pause"),
        json!({"reason": "maintenance"}),
    )
    .await;
    let paused = json!([
        [[busy, "PAUSED"]],
        [],
        [["worker.state.changed", busy]],
        "2 of 10"
    ]);
    let shown = browser.wait_for("the pause shows", SHOWS, paused).await;
    let mut stored: Vec<i64> = app.events().await.iter().map(|e| e.seq).collect();
    stored.reverse();
    let seqs: Vec<i64> = serde_json::from_value(shown["seqs"].clone()).unwrap();
    assert_eq!(seqs, stored, "the feed against the outbox, after resuming");

    let wide = browser.screenshot("target/dashboard.png").await;
    browser.resize(420, 900).await;
    let narrow = browser
        .wait_for(
            "one column on a narrow screen",
            "const columns = getComputedStyle(document.getElementById('board')).gridTemplateColumns;
             return {done: columns.split(' ').length === 1, columns, width: innerWidth,
                     overflow: document.documentElement.scrollWidth > innerWidth};",
            json!([]),
        )
        .await;
    assert_eq!(
        narrow["overflow"], false,
        "the page scrolls sideways: {narrow}"
    );
    let narrow_shot = browser.screenshot("target/dashboard-narrow.png").await;

    // A reload keeps the session (same tab); signing out forgets it.
    browser.open(&format!("{}/", app.address)).await;
    browser
        .wait_for("the panels load again", LOADED, json!([]))
        .await;
    browser.click("#sign-out").await;
    browser
        .wait_for("signed out", SIGNED_OUT_SAYING, json!(["Signed out"]))
        .await;
    let after = browser
        .run(
            "return {session: sessionStorage.getItem(arguments[0]), \
             workers: document.querySelectorAll('#workers tr').length, \
             feed: document.querySelectorAll('#feed li').length};",
            json!([TOKEN_KEY]),
        )
        .await;
    assert_eq!(after, json!({"session": null, "workers": 0, "feed": 0}));
    eprintln!(
        "screenshots: {} and {}; {:.1} s",
        wide.display(),
        narrow_shot.display(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn credentials_sign_in_and_refusals_are_shown() {
    let browser = Browser::start(1280, 900).await;
    let app = app().await;
    // An account that may read workers and quotas, not jobs.
    let scopes = [Scope::SupervisorRead, Scope::ResourcesRead];
    let account = Account::new(
        "dashboard-viewer",
        scopes.into_iter().collect(),
        Some(WorkspaceId::parse("ws_a").unwrap()),
    )
    .unwrap();
    let secret = upsert(&app.db.client().await.unwrap(), &account)
        .await
        .unwrap();
    browser.open(&format!("{}/", app.address)).await;

    // A token the server refuses sends the page back to the sign-in form, saying why.
    browser.type_into("#token", "not-a-token").await;
    browser.click("#sign-in").await;
    browser
        .wait_for(
            "a refused token",
            SIGNED_OUT_SAYING,
            json!(["refused the token (401)"]),
        )
        .await;

    browser.type_into("#client-id", "dashboard-viewer").await;
    browser.type_into("#client-secret", "not-the-secret").await;
    browser.click("#sign-in-credentials").await;
    browser
        .wait_for(
            "a wrong secret",
            SIGNED_OUT_SAYING,
            json!(["Sign-in refused (401)"]),
        )
        .await;

    // The client id stays in the form; the secret does not.
    browser.type_into("#client-secret", &secret).await;
    browser.click("#sign-in-credentials").await;
    let signed_in = browser
        .wait_for(
            "signed in with credentials, jobs refused",
            r##"
            const text = (id) => document.getElementById(id).textContent;
            const done = !document.getElementById("board").hidden
              && document.querySelectorAll("#quota li").length === 6
              && text("worker-total") !== ""
              && text("status").includes("Jobs: forbidden (403)")
              && text("jobs-note").includes("403");
            return {done, identity: text("identity"), status: text("status"),
                    secret: document.getElementById("client-secret").value};
            "##,
            json!([]),
        )
        .await;
    let identity = signed_in["identity"].as_str().unwrap();
    assert!(
        identity.contains("dashboard-viewer") && identity.contains("workspace ws_a"),
        "{signed_in}"
    );
    assert_eq!(signed_in["secret"], "", "the secret stays in the form");
}

#[test]
fn the_page_escapes_what_the_server_says() {
    // Text from the API reaches the DOM through textContent and attributes only.
    let page = std::fs::read_to_string(repo_root().join("components/platform/dashboard.html"))
        .expect("the page");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!page.contains(sink), "the page uses {sink}");
    }
}

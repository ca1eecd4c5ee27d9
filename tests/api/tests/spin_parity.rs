//! What the app has to hold up against because real Spin does it (see the host's README section):
//! pooled Postgres connections handed out still inside a transaction that someone else abandoned.

use api_tests::*;
use reqwest::Method;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The app's manifest with the probe component added beside it, on the same database, as a
/// second component of one Spin app would share its Postgres pool.
struct ManifestWithProbe(PathBuf);

impl ManifestWithProbe {
    fn write() -> Self {
        let root = repo_root().canonicalize().unwrap();
        let app = std::fs::read_to_string(root.join("spin.toml")).unwrap();
        let target = root.join("target");
        let app = app
            .replace(
                "source = \"target/",
                &format!("source = \"{}/", target.display()),
            )
            .replacen(
                "[variables]\n",
                "[variables]\nprobe_token = { default = \"t\" }\ngreeting = { default = \"hello\" }\n",
                1,
            );
        let probe = format!(
            r#"
[[trigger.http]]
route = "/probe/..."
component = "probe"

[component.probe]
source = "{}/wasm32-wasip2/release/probe.wasm"
allowed_outbound_hosts = ["postgres://{{{{ database_host }}}}", "redis://{{{{ redis_host }}}}"]
[component.probe.variables]
database_url = "{{{{ database_url }}}}"
redis_url = "{{{{ redis_url }}}}"
greeting = "{{{{ greeting }}}}"
probe_token = "{{{{ probe_token }}}}"
"#,
            target.display()
        );
        let dir = target.join("test-manifests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("app-with-probe-{}.toml", unique()));
        std::fs::write(&path, app + &probe).unwrap();
        Self(path)
    }
}

impl Drop for ManifestWithProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long anyone may wait on a neighbour's abandoned locks: the database ends a session idle
/// in a transaction after 5 s (migration 0006); the rest is slack for a loaded machine.
const LOCK_WAIT_BOUND: Duration = Duration::from_secs(8);

/// A neighbour component on the same database keeps leaving transactions open — returning
/// without a commit, or trapping — with rows written and a worker's row locked, while the app's
/// writes and reads race it on the same pool. Under Spin each abandoned transaction goes back to
/// the pool open; the app must never run inside one: none of its answers shows the neighbour's
/// rows, it commits none of them, and none of its requests waits on their locks past a bound.
#[tokio::test]
async fn a_neighbour_abandoning_transactions_never_leaks_into_the_app() {
    let manifest = ManifestWithProbe::write();
    let app = spawn_app_with(|mut options| {
        options.manifest = manifest.0.clone();
        options
    })
    .await;
    app.run_sql("CREATE TABLE probe_rows (n int)").await;
    let workers: Vec<String> = (0..4).map(|i| format!("w_n{i}")).collect();
    for id in &workers {
        app.register_worker(id, WORKSPACE).await;
        app.move_worker(id, "start", None).await;
    }

    let poison = format!(
        "UPDATE workers SET metadata = '{{\"poisoned\": true}}'::jsonb WHERE id = '{}'",
        workers[0]
    );
    let neighbour = async {
        let mut abandoned = 0;
        for round in 0..30 {
            let query = match round % 3 {
                0 => String::new(),
                1 => format!("?sql={}", percent_encoded(&poison)),
                _ => format!("?sql={}&trap=1", percent_encoded(&poison)),
            };
            let response = app
                .request(
                    Method::GET,
                    &format!("/probe/abandon-transaction{query}"),
                    None,
                )
                .send()
                .await
                .unwrap();
            // 200 when it returned with its transaction open, 500 when it trapped in it.
            assert!(
                [200, 500].contains(&response.status().as_u16()),
                "{}",
                response.status()
            );
            abandoned += 1;
        }
        abandoned
    };

    let writer = |id: String| {
        let app = &app;
        async move {
            let mut slowest = Duration::ZERO;
            for round in 0..20 {
                let action = if round % 2 == 0 { "pause" } else { "start" };
                let started = Instant::now();
                let response = app
                    .post_optional(
                        &format!("/api/supervisor/workers/{id}/{action}"),
                        &supervisor_writer(None),
                        None,
                    )
                    .await;
                slowest = slowest.max(started.elapsed());
                let (status, body) = parts(response).await;
                assert_eq!(status, 200, "{action} {id}: {body}");
                assert!(body["metadata"].get("poisoned").is_none(), "{body}");
            }
            slowest
        }
    };
    let reader = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..60 {
            let started = Instant::now();
            let page = app
                .get_ok("/api/supervisor/workers?limit=100", &member())
                .await;
            slowest = slowest.max(started.elapsed());
            for worker in page["workers"].as_array().unwrap() {
                assert!(worker["metadata"].get("poisoned").is_none(), "{worker}");
            }
        }
        slowest
    };

    let (abandoned, writes, reads) = tokio::join!(
        neighbour,
        futures_util::future::join_all(workers.iter().cloned().map(writer)),
        reader
    );
    let slowest = writes.into_iter().fold(reads, Duration::max);
    eprintln!("{abandoned} transactions abandoned; slowest app request {slowest:?}");
    assert!(slowest < LOCK_WAIT_BOUND, "slowest app request {slowest:?}");

    assert_eq!(app.select_int("SELECT count(*) FROM probe_rows").await, 0);
    assert_eq!(
        app.select_int("SELECT count(*) FROM workers WHERE metadata ? 'poisoned'")
            .await,
        0
    );
    // Every move the app answered 200 is in the audit trail, and nothing else: its commits were
    // its own (a start at registration, then twenty moves per worker).
    let moves = app
        .select_int(
            "SELECT count(*) FROM worker_transitions WHERE to_state IN ('PAUSED', 'RUNNING')",
        )
        .await;
    assert_eq!(moves, (workers.len() * 21) as i64);
}

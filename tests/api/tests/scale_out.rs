//! Scale-out on one box: the app served by three host *processes* (the `spin-host` binary, each on
//! a loopback port of its own) against one database and one Redis — one key prefix and one events
//! channel of the test's own — as N instances of the service behind a load balancer are. Racing
//! writes go round-robin to the three: pauses and resumes of shared workers, submits, allocations
//! and releases at depths whose quotas are small so that grants compete, cancels of job trees
//! racing with allocations into them, and keyed requests sent with one `Idempotency-Key` to all
//! three processes at once (then once more to each). Afterwards:
//!
//! - **no over-grant**: at each depth the open allocations add up to what the quota stripes hold and to no
//!   more than the configured quota, now and at every point of the commit order (the allocation
//!   and release events in `seq` order), and every process reads the same usage;
//! - **one change per key**: each key ran once (one job, or one allocation, or one recorded
//!   refusal); every other answer to it is `409 IDEMPOTENCY_KEY_IN_USE` or a replay, marked
//!   `Idempotent-Replayed: true`, with the first answer's status, `ETag` and body byte for byte;
//! - **legal audit trails**: each worker's and job's trail starts at its first state, each row's
//!   `from_state` is the previous row's `to_state`, and each step is one the state machine allows;
//!   the object's status is the trail's end;
//! - **one event per committed change**: every audit row, every allocation and every release has
//!   exactly one event in the outbox, saying the same, and no event is about anything else; every
//!   event is stamped (`seq` 1…n) and published, and the channel carried each one, each subject's
//!   in `seq` order.
//!
//! Two variants: the processes reach Postgres directly, each with a pool of [`DIRECT_POOL`]; or
//! through a PgBouncer in `pool_mode = transaction` the test starts on a spare port, each process
//! with Spin's fixed pool of 64, all funnelled into [`PGBOUNCER_SERVER_CONNECTIONS`]. Both check
//! the connections Postgres saw stay within that sizing.
//!
//! **Sizing N instances.** Postgres allows `max_connections` (100 here) less
//! `superuser_reserved_connections` (3); keep a reserve R for migrations, `psql`, monitoring and
//! the like (20 here). Direct, every instance may open its whole pool, so N × pool ≤ 100 − 3 − R:
//! at Spin's fixed 64 a second instance already does not fit. Through PgBouncer the instances hold
//! client connections only (N × 64 ≤ `max_client_conn`), and Postgres sees at most
//! `default_pool_size` (capped by `max_db_connections`) per database and user, plus
//! `reserve_pool_size`: that sum ≤ 100 − 3 − R, whatever N. A write holds its server connection
//! for its transaction only, so a pool of 10–20 serves many instances.
//!
//! **PgBouncer and Spin's prepared statements.** Spin's driver (and the host, as Spin does)
//! prepares every statement as a named protocol-level statement: Parse/Describe/Sync, then
//! Bind/Execute/Sync, two round trips, each process naming its statements s0, s1, …. In
//! transaction mode PgBouncer before 1.21 may give the second round trip to another server
//! connection, shared by all processes: reads one at a time are mostly served, concurrent ones
//! fail with `prepared statement "s12" does not exist`, `prepared statement "s0" already exists`
//! (another process's s0, left behind where its Close went to another connection), even `bind message supplies 3 parameters, but prepared statement "s7" requires
//! 1` — a Bind reaching another process's statement, which with matching parameters would run the
//! wrong SQL. PgBouncer 1.21 and later keep the statements (`max_prepared_statements`, 200 by
//! default from 1.22 on; the test sets it). Debian 12's PgBouncer is 1.18, so `scripts/setup`
//! builds 1.24 from Debian 13's source under `target/pgbouncer`; `PGBOUNCER=/path/to/pgbouncer`
//! runs the test through another.

use api_tests::processes::{
    ForgetRedisKeys, HostConfig, HostProcess, PgBouncer, ScratchDir, pgbouncer_clients,
};
use api_tests::{
    Answer, REDIS, StoredEvent, TestDatabase, all_scopes, assert_one_of, assert_replay_of, token,
    unique, worker_may_become,
};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Host processes serving the app.
const PROCESSES: usize = 3;
const WORKSPACE: &str = "ws_scale";
/// `depth_quotas` of every process: small where the race allocates (depths 0, 1 and 2).
const DEPTH_QUOTAS: [i64; 6] = [6, 4, 3, 3, 2, 1];
/// Each process's Postgres pool when it reaches Postgres directly: 3 × 8 of the 77 connections
/// the tests may use (the other variant, running beside it, takes PgBouncer's 10).
const DIRECT_POOL: usize = 8;
/// Each process's pool through PgBouncer: Spin's, which cannot be changed.
const SPIN_POOL: usize = 64;
/// What PgBouncer may open to Postgres for the test's database, however many clients it has.
const PGBOUNCER_SERVER_CONNECTIONS: u32 = 10;
/// Requests of the race in flight at once.
const LANES: usize = 24;
/// The race stops taking new operations after this.
const RACE_BUDGET: Duration = Duration::from_secs(20);
/// The longest a variant may take once its database is ready.
const TEST_BUDGET: Duration = Duration::from_secs(50);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The race's order (see [`World::operations`]).
const SEED: u64 = 0x5ca1_e0d7;
const SHARED_WORKERS: usize = 6;
const POOL_JOBS: usize = 10;
const TREES: usize = 3;
const KEYED_SUBMITS: usize = 16;
const KEYED_ALLOCATIONS: usize = 16;
/// The operations of the race other than keyed ones and cancels.
const MOVES: usize = 300;
const SUBMITS: usize = 40;
const POOL_ALLOCATIONS: usize = 200;
const POOL_RELEASES: usize = 150;
const TREE_ALLOCATIONS: usize = 90;
const TREE_RELEASES: usize = 20;

const MOVED: &[(u16, &str)] = &[(200, ""), (409, "INVALID_STATE_TRANSITION")];
const SUBMITTED: &[(u16, &str)] = &[(201, "")];
const GRANTED: &[(u16, &str)] = &[(201, ""), (409, "QUOTA_EXCEEDED")];
const GRANTED_TO_TREE: &[(u16, &str)] = &[
    (201, ""),
    (409, "QUOTA_EXCEEDED"),
    (409, "INVALID_STATE_TRANSITION"),
];
const RELEASED: &[(u16, &str)] = &[(200, "")];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_database_keep_every_invariant() {
    let db = TestDatabase::create().await.expect("test database");
    let url = db.url.clone();
    let scratch = ScratchDir::create("scale-out-direct");
    let cluster = Cluster::start(db, url, DIRECT_POOL, None, scratch).await;
    let bound = PROCESSES * DIRECT_POOL;
    cluster.race_and_check(bound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_through_pgbouncer_in_transaction_mode() {
    let binary = PgBouncer::binary();
    let db = TestDatabase::create().await.expect("test database");
    let scratch = ScratchDir::create("scale-out-pgbouncer");
    let bouncer = PgBouncer::start(
        &binary,
        &db.name,
        PGBOUNCER_SERVER_CONNECTIONS,
        &scratch.path,
    )
    .await;
    let url = bouncer.url(&db.name);
    let cluster = Cluster::start(db, url, SPIN_POOL, Some(bouncer), scratch).await;
    cluster
        .race_and_check(PGBOUNCER_SERVER_CONNECTIONS as usize)
        .await;
}

/// The three processes, what they reach Postgres through, and the test's database.
struct Cluster {
    // Dropped in this order: the processes first, then PgBouncer, then the Redis keys, the database
    // and the logs.
    hosts: Vec<HostProcess>,
    bouncer: Option<PgBouncer>,
    _forget: Option<ForgetRedisKeys>,
    db: TestDatabase,
    _scratch: ScratchDir,
    client: Client,
    channel: String,
    /// The database's name, as PgBouncer's clients are listed under it.
    database: String,
    /// From when the database was ready.
    started: Instant,
}

impl Cluster {
    /// Starts the processes, all on `database_url` (the database's own, or through PgBouncer),
    /// each with a pool of `pool`.
    async fn start(
        db: TestDatabase,
        database_url: String,
        pool: usize,
        bouncer: Option<PgBouncer>,
        scratch: ScratchDir,
    ) -> Self {
        let started = Instant::now();
        let channel = format!("test.events.scale.{}", unique());
        let config = HostConfig {
            database_url: database_url.clone(),
            events_channel: channel.clone(),
            postgres_pool_size: pool,
            variables: vec![(
                "depth_quotas".into(),
                DEPTH_QUOTAS.map(|quota| quota.to_string()).join(","),
            )],
        };
        let hosts = join_all(
            (0..PROCESSES)
                .map(|n| HostProcess::start(&config, scratch.path.join(format!("host-{n}.log")))),
        )
        .await;
        let client = Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            bearer: token(&all_scopes(), Some(WORKSPACE)),
            addresses: Arc::new(hosts.iter().map(|host| host.address.clone()).collect()),
        };
        let forget = (database_url != db.url).then(|| ForgetRedisKeys(database_url));
        Self {
            hosts,
            bouncer,
            _forget: forget,
            database: db.name.clone(),
            db,
            _scratch: scratch,
            client,
            channel,
            started,
        }
    }

    /// The race and every check; Postgres must see at most `server_connections` of the test's
    /// database at any moment of it.
    async fn race_and_check(&self, server_connections: usize) {
        let redis = redis::Client::open(REDIS).unwrap();
        let mut subscriber = redis.get_async_pubsub().await.unwrap();
        subscriber.subscribe(&self.channel).await.unwrap();

        let world = self.set_up().await;
        let ops = Arc::new(world.operations(SEED));
        let peak = self.sample_connections().await;
        let race_started = Instant::now();
        let outcomes = race(&self.client, Arc::clone(&ops)).await;
        let race_took = race_started.elapsed();
        let (server_peak, client_peak) = peak.stop().await;

        let run = outcomes
            .iter()
            .filter(|answers| !answers.is_empty())
            .count();
        let requests: usize = outcomes.iter().map(Vec::len).sum();
        let mut by_status: BTreeMap<(&str, u16), usize> = BTreeMap::new();
        for (op, answers) in ops.iter().zip(&outcomes) {
            for (_, answer) in answers {
                *by_status.entry((op.kind(), answer.status)).or_default() += 1;
            }
        }
        eprintln!(
            "{run} of {} operations ({requests} requests) over {PROCESSES} processes in \
             {race_took:.1?}; Postgres connections of the database at most {server_peak} \
             (bound {server_connections}){}; answers {by_status:?}",
            ops.len(),
            client_peak.map_or(String::new(), |clients| format!(
                ", PgBouncer clients at most {clients}"
            )),
        );
        assert!(
            run >= ops.len() / 2,
            "only {run} of {} operations ran within {RACE_BUDGET:?}",
            ops.len()
        );
        assert!(
            server_peak <= server_connections,
            "Postgres saw {server_peak} connections of the test's database, more than the \
             {server_connections} the sizing allows"
        );

        self.check_answers(&ops, &outcomes);
        let grants = self.check_keys(&ops, &outcomes).await;
        self.check_quotas(&ops, &outcomes, grants).await;
        let trails = self.check_trails(&world).await;
        let events = self.check_events(trails).await;
        check_channel(&mut subscriber, &events).await;
        for host in &self.hosts {
            let output = host.output();
            assert!(
                !output.contains("prepared statement"),
                "{}: {output}",
                host.address
            );
        }
        assert!(
            self.started.elapsed() < TEST_BUDGET,
            "{:?}",
            self.started.elapsed()
        );
    }

    /// What the race needs, made round-robin over the processes: shared running workers, jobs to
    /// allocate to, job trees to cancel, and a job for each keyed allocation.
    async fn set_up(&self) -> World {
        let mut world = World::default();
        let mut next = 0;
        let mut host = || {
            next += 1;
            next % PROCESSES
        };
        for n in 0..SHARED_WORKERS {
            let id = format!("w_scale_{n}");
            let registered = self
                .client
                .post(
                    host(),
                    "/api/supervisor/workers",
                    &json!({ "id": id }),
                    None,
                )
                .await;
            assert_eq!(registered.status, 201, "{:?}", registered.json());
            let path = format!("/api/supervisor/workers/{id}/start");
            let started = self.client.post(host(), &path, &json!({}), None).await;
            assert_eq!(started.status, 200, "{:?}", started.json());
            world.workers.push(id);
        }
        for _ in 0..POOL_JOBS {
            world.pool_jobs.push(self.submit(host(), 0, None).await);
        }
        for _ in 0..TREES {
            let root = self.submit(host(), 0, None).await;
            world.tree_jobs.push((root.clone(), 0));
            world.cancellable.push(root.clone());
            for _ in 0..2 {
                let child = self.submit(host(), 1, Some(&root)).await;
                world.tree_jobs.push((child.clone(), 1));
                world.cancellable.push(child.clone());
                for _ in 0..2 {
                    let grandchild = self.submit(host(), 2, Some(&child)).await;
                    world.tree_jobs.push((grandchild, 2));
                }
            }
        }
        for _ in 0..KEYED_ALLOCATIONS {
            world.keyed_jobs.push(self.submit(host(), 0, None).await);
        }
        world
    }

    async fn submit(&self, host: usize, depth: i64, parent: Option<&str>) -> String {
        let body = json!({"task_description": "scale out", "worker_count": 3, "depth": depth,
                          "parent_job_id": parent});
        let answer = self
            .client
            .post(host, "/api/jobs/submit", &body, None)
            .await;
        assert_eq!(answer.status, 201, "{:?}", answer.json());
        answer.json()["id"].as_str().unwrap().to_owned()
    }

    /// Samples, until stopped, how many connections Postgres has of the test's database (and how
    /// many clients PgBouncer has for it), keeping the highest.
    async fn sample_connections(&self) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let database = self.database.clone();
        let db = self.db.client().await.unwrap();
        let bouncer = self.bouncer.as_ref().map(|bouncer| bouncer.port);
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut servers, mut clients) = (0i64, None::<usize>);
            while !stopping.load(Ordering::Relaxed) {
                let count: i64 = db
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                servers = servers.max(count);
                if let Some(port) = bouncer {
                    if let Ok(now) = pgbouncer_clients(port, &database).await {
                        clients = Some(clients.unwrap_or(0).max(now));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (servers as usize, clients)
        });
        Sampler { stop, task }
    }

    /// Every answer of an unkeyed operation is one its operation may give.
    fn check_answers(&self, ops: &[Op], outcomes: &[Vec<(usize, Answer)>]) {
        for (op, answers) in ops.iter().zip(outcomes) {
            if matches!(op, Op::Keyed { .. }) {
                continue;
            }
            for (host, answer) in answers {
                assert!(
                    answer.status < 500,
                    "{op:?} on process {host}: {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
                assert_one_of(answer.status, &answer.json(), op.allowed());
            }
        }
    }

    /// Each key changed state once: one answer is the first, every other one a replay of it or
    /// `IDEMPOTENCY_KEY_IN_USE`; a retry to each process afterwards is a replay; and the database
    /// holds one job per keyed submit and one allocation per granted keyed allocation. Returns the
    /// allocations the keyed answers granted (id, workers).
    async fn check_keys(
        &self,
        ops: &[Op],
        outcomes: &[Vec<(usize, Answer)>],
    ) -> Vec<(String, i64)> {
        let db = self.db.client().await.unwrap();
        let mut keys = 0;
        let mut grants = Vec::new();
        let (mut replays, mut in_use) = (0, 0);
        for (op, answers) in ops.iter().zip(outcomes) {
            let Op::Keyed {
                key,
                path,
                body,
                allowed,
            } = op
            else {
                continue;
            };
            if answers.is_empty() {
                continue;
            }
            keys += 1;
            let is_in_use = |answer: &Answer| {
                answer.status == 409
                    && answer.json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
                    && !answer.replayed()
            };
            let firsts: Vec<&(usize, Answer)> = answers
                .iter()
                .filter(|(_, answer)| !answer.replayed() && !is_in_use(answer))
                .collect();
            assert_eq!(
                firsts.len(),
                1,
                "{key}: exactly one answer is not a replay: {answers:?}"
            );
            let first = &firsts[0].1;
            assert_one_of(first.status, &first.json(), allowed);
            for (host, answer) in answers {
                if answer.replayed() {
                    assert_replay_of(answer, first);
                    replays += 1;
                } else if is_in_use(answer) {
                    in_use += 1;
                } else {
                    assert!(std::ptr::eq(answer, first), "{key} on {host}: {answer:?}");
                }
            }
            for host in 0..PROCESSES {
                let retry = self.client.post(host, path, body, Some(key.as_str())).await;
                assert_replay_of(&retry, first);
            }
            let first = first.json();
            if *path == "/api/jobs/submit" {
                let jobs = db
                    .query(
                        "SELECT id FROM jobs WHERE task_description = $1",
                        &[&key.as_str()],
                    )
                    .await
                    .unwrap();
                let ids: Vec<String> = jobs.iter().map(|row| row.get(0)).collect();
                assert_eq!(ids, [first["id"].as_str().unwrap()], "{key}: one job");
            } else {
                let job = body["job_id"].as_str().unwrap();
                let rows = db
                    .query(
                        "SELECT id, workers::int8 FROM allocations WHERE job_id = $1",
                        &[&job],
                    )
                    .await
                    .unwrap();
                let held: Vec<(String, i64)> =
                    rows.iter().map(|row| (row.get(0), row.get(1))).collect();
                if let Some(id) = first["allocation_id"].as_str() {
                    let granted = first["granted"].as_i64().unwrap();
                    assert_eq!(held, [(id.to_owned(), granted)], "{key}: one allocation");
                    grants.push((id.to_owned(), granted));
                } else {
                    assert!(held.is_empty(), "{key}: refused, yet {held:?}");
                }
            }
        }
        let records: i64 = db
            .query_one("SELECT count(*) FROM idempotency_records", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(records, keys, "one record per key, and keys only");
        eprintln!(
            "{keys} keys, each sent to all {PROCESSES} processes at once: {replays} replays, \
             {in_use} in use"
        );
        grants
    }

    /// No over-grant: at each depth the open allocations add up to what the quota stripes hold and stay
    /// within the configured quota, which no process raised, and every process reads that usage;
    /// each job holds its open allocations, terminal jobs none; every grant answered is one
    /// allocation row and there is no other. `keyed` are the grants of keyed answers.
    async fn check_quotas(
        &self,
        ops: &[Op],
        outcomes: &[Vec<(usize, Answer)>],
        keyed: Vec<(String, i64)>,
    ) {
        let db = self.db.client().await.unwrap();
        let rows = db
            .query(
                "SELECT q.depth::int8, q.max_workers::int8, q.allocated, \
                        (SELECT coalesce(sum(workers), 0) FROM allocations a \
                         WHERE a.depth = q.depth AND a.released_at IS NULL)::int8, \
                        (SELECT count(*) FROM allocations a WHERE a.depth = q.depth) \
                 FROM quota_usage q ORDER BY q.depth",
                &[],
            )
            .await
            .unwrap();
        let mut open = Vec::new();
        for row in &rows {
            let (depth, max, allocated, held, ever): (i64, i64, i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let quota = DEPTH_QUOTAS[depth as usize];
            assert!(
                max == quota || ever == 0,
                "depth {depth}: granted from rows laid out for {max}, not {quota}"
            );
            assert!(
                held <= quota,
                "depth {depth}: {held} workers granted, over the quota of {quota}"
            );
            assert_eq!(
                allocated, held,
                "depth {depth}: the quota stripes hold the ledger's"
            );
            open.push(held);
        }
        for host in 0..PROCESSES {
            let usage = self.client.get(host, "/api/resources/usage").await;
            for (depth, row) in usage["usage"].as_array().unwrap().iter().enumerate() {
                assert_eq!(row["allocated"], open[depth], "process {host}: {row}");
                assert_eq!(
                    row["max_workers"], DEPTH_QUOTAS[depth],
                    "process {host}: {row}"
                );
            }
        }
        for (what, sql) in [
            (
                "jobs holding other than their open allocations",
                "SELECT count(*) FROM jobs j WHERE j.allocated_workers <> \
                 (SELECT coalesce(sum(workers), 0) FROM allocations a \
                  WHERE a.job_id = j.id AND a.released_at IS NULL)",
            ),
            (
                "open allocations of terminal jobs",
                "SELECT count(*) FROM allocations a JOIN jobs j ON j.id = a.job_id \
                 WHERE a.released_at IS NULL AND j.status IN ('COMPLETED', 'FAILED', 'CANCELED')",
            ),
        ] {
            let count: i64 = db.query_one(sql, &[]).await.unwrap().get(0);
            assert_eq!(count, 0, "{what}");
        }
        let mut answered: Vec<(String, i64)> = keyed;
        for (op, answers) in ops.iter().zip(outcomes) {
            if matches!(op, Op::Allocate { .. }) {
                for (_, answer) in answers.iter().filter(|(_, answer)| answer.status == 201) {
                    let grant = answer.json();
                    answered.push((
                        grant["allocation_id"].as_str().unwrap().to_owned(),
                        grant["granted"].as_i64().unwrap(),
                    ));
                }
            }
        }
        answered.sort();
        let rows = db
            .query("SELECT id, workers::int8 FROM allocations ORDER BY id", &[])
            .await
            .unwrap();
        let ledger: Vec<(String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        assert_eq!(
            ledger, answered,
            "one allocation row per grant answered, and no other"
        );
        eprintln!(
            "{} grants; open allocations per depth {open:?} (quotas {DEPTH_QUOTAS:?})",
            ledger.len()
        );
    }

    /// Every audit trail is a legal walk of its state machine ending at the object's state (and a
    /// worker's version counts its moves); returns the trails by subject.
    async fn check_trails(&self, world: &World) -> Trails {
        let db = self.db.client().await.unwrap();
        let mut trails = Trails::default();
        for (table, subject, objects) in [
            ("worker_transitions", "worker_id", "workers"),
            ("job_transitions", "job_id", "jobs"),
        ] {
            let rows = db
                .query(
                    &format!(
                        "SELECT t.{subject}, t.from_state, t.to_state, o.status, o.version \
                         FROM {table} t JOIN {objects} o ON o.id = t.{subject} \
                         ORDER BY t.{subject}, t.id"
                    ),
                    &[],
                )
                .await
                .unwrap();
            let mut by_subject: BTreeMap<String, (Vec<Step>, String, i64)> = BTreeMap::new();
            for row in &rows {
                let entry = by_subject
                    .entry(row.get(0))
                    .or_insert_with(|| (Vec::new(), row.get(3), row.get(4)));
                entry.0.push((row.get(1), row.get(2)));
            }
            let count: i64 = db
                .query_one(&format!("SELECT count(*) FROM {objects}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                by_subject.len() as i64,
                count,
                "every one of {objects} has a trail"
            );
            let is_worker = objects == "workers";
            for (id, (trail, status, version)) in by_subject {
                let first = if is_worker { "IDLE" } else { "SUBMITTED" };
                assert_eq!(trail[0], (None, first.to_owned()), "{id}: {trail:?}");
                for pair in trail.windows(2) {
                    let (previous, (from, to)) = (&pair[0].1, &pair[1]);
                    assert_eq!(from.as_ref(), Some(previous), "{id}: a gap in {trail:?}");
                    let allowed = if is_worker {
                        worker_may_become(previous)
                    } else {
                        job_may_become(previous)
                    };
                    assert!(
                        allowed.contains(&to.as_str()),
                        "{id}: {previous} -> {to} in {trail:?}"
                    );
                }
                assert_eq!(
                    &status,
                    &trail.last().unwrap().1,
                    "{id}: its state is the trail's end"
                );
                if is_worker {
                    assert_eq!(version, trail.len() as i64, "{id}: one version per move");
                    trails.workers.insert(id, trail);
                } else {
                    trails.jobs.insert(id, trail);
                }
            }
        }
        assert_eq!(trails.workers.len(), world.workers.len());
        let moves: usize = trails.workers.values().map(|trail| trail.len() - 2).sum();
        let canceled = trails
            .jobs
            .values()
            .filter(|trail| trail.last().unwrap().1 == "CANCELED")
            .count();
        eprintln!(
            "trails: {} workers ({moves} moves in the race), {} jobs ({canceled} canceled)",
            trails.workers.len(),
            trails.jobs.len()
        );
        trails
    }

    /// Every committed change has exactly one event, saying what the change did, and every event
    /// is one of them; all are stamped (`seq` 1…n) and published. The grants and releases, in
    /// `seq` order, never held more of a depth than its quota. Returns the events in `seq` order.
    async fn check_events(&self, trails: Trails) -> Vec<StoredEvent> {
        let db = self.db.client().await.unwrap();
        let unstamped: i64 = db
            .query_one(
                "SELECT count(*) FROM events WHERE seq IS NULL OR published_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(unstamped, 0, "events left unstamped or unpublished");
        let events = db.events().await;
        for (n, event) in events.iter().enumerate() {
            assert_eq!(
                event.seq,
                n as i64 + 1,
                "seq numbers every event once, without a gap (of {})",
                events.len()
            );
        }

        // Audit rows: per subject, its events are its trail, step for step.
        let step_events = |registered: &str, changed: &str| {
            let mut by_subject: BTreeMap<String, Vec<Step>> = BTreeMap::new();
            for event in events
                .iter()
                .filter(|e| e.kind == registered || e.kind == changed)
            {
                let step = if event.kind == registered {
                    (None, "(first)".to_owned())
                } else {
                    (
                        event.data["from"].as_str().map(str::to_owned),
                        event.data["to"].as_str().unwrap().to_owned(),
                    )
                };
                by_subject
                    .entry(event.subject.clone())
                    .or_default()
                    .push(step);
            }
            by_subject
        };
        let as_events = |trails: &BTreeMap<String, Vec<Step>>| {
            trails
                .iter()
                .map(|(id, trail)| {
                    let mut steps = trail.clone();
                    steps[0] = (None, "(first)".to_owned());
                    (id.clone(), steps)
                })
                .collect::<BTreeMap<_, _>>()
        };
        for (kinds, trails) in [
            (
                ("worker.registered", "worker.state.changed"),
                &trails.workers,
            ),
            (("job.submitted", "job.state.changed"), &trails.jobs),
        ] {
            let (told, done) = (step_events(kinds.0, kinds.1), as_events(trails));
            for subject in told.keys().chain(done.keys()) {
                assert_eq!(
                    told.get(subject),
                    done.get(subject),
                    "{subject}: its events (left) are not its audit rows (right), one for one"
                );
            }
        }

        // Allocations: one `resources.allocated` each, saying what was granted.
        let rows = db
            .query(
                "SELECT id, job_id, depth::int8, workers::int8 FROM allocations ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        let ledger: BTreeMap<String, Value> = rows
            .iter()
            .map(|row| {
                let id: String = row.get(0);
                let grant = json!({"job_id": row.get::<_, String>(1), "depth": row.get::<_, i64>(2),
                                   "granted": row.get::<_, i64>(3), "allocation_id": id});
                (id, grant)
            })
            .collect();
        let mut allocated: BTreeMap<String, Value> = BTreeMap::new();
        for event in events.iter().filter(|e| e.kind == "resources.allocated") {
            let grant = json!({"job_id": event.data["job_id"], "depth": event.data["depth"],
                               "granted": event.data["granted"],
                               "allocation_id": event.data["allocation_id"]});
            assert_eq!(event.subject, event.data["allocation_id"], "{event:?}");
            let again = allocated.insert(event.subject.clone(), grant);
            assert!(
                again.is_none(),
                "two events for allocation {}",
                event.subject
            );
        }
        assert_eq!(
            allocated, ledger,
            "one resources.allocated per allocation row"
        );

        // Releases: per job, the workers its `resources.released` events freed are those of its
        // closed allocations, and none of them freed nothing.
        let rows = db
            .query(
                "SELECT job_id, sum(workers)::int8 FROM allocations \
                 WHERE released_at IS NOT NULL GROUP BY job_id ORDER BY job_id",
                &[],
            )
            .await
            .unwrap();
        let closed: BTreeMap<String, i64> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        let mut freed: BTreeMap<String, i64> = BTreeMap::new();
        let mut releases = 0;
        for event in events.iter().filter(|e| e.kind == "resources.released") {
            let workers = event.data["released_workers"].as_i64().unwrap();
            assert!(workers > 0 && event.data["released"] == true, "{event:?}");
            assert_eq!(event.subject, event.data["job_id"], "{event:?}");
            *freed.entry(event.subject.clone()).or_default() += workers;
            releases += 1;
        }
        assert_eq!(
            freed, closed,
            "the released events free exactly the closed allocations"
        );

        let audit_rows: usize = trails
            .workers
            .values()
            .chain(trails.jobs.values())
            .map(Vec::len)
            .sum();
        assert_eq!(
            events.len(),
            audit_rows + ledger.len() + releases,
            "no event about anything but an audit row, an allocation or a release"
        );

        // In commit order, no depth ever held more than its quota, and the running sum ends at the
        // open allocations.
        let mut held = [0i64; 6];
        for event in &events {
            let delta = match event.kind.as_str() {
                "resources.allocated" => event.data["granted"].as_i64().unwrap(),
                "resources.released" => -event.data["released_workers"].as_i64().unwrap(),
                _ => continue,
            };
            let depth = event.data["depth"].as_u64().unwrap() as usize;
            held[depth] += delta;
            assert!(
                (0..=DEPTH_QUOTAS[depth]).contains(&held[depth]),
                "at seq {}, depth {depth} held {} of {}",
                event.seq,
                held[depth],
                DEPTH_QUOTAS[depth]
            );
        }
        let open: Vec<i64> = db
            .query(
                "SELECT (SELECT coalesce(sum(workers), 0) FROM allocations a \
                         WHERE a.depth = q.depth AND a.released_at IS NULL)::int8 \
                 FROM quota_usage q ORDER BY q.depth",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            held.to_vec(),
            open,
            "the events add up to the open allocations"
        );
        eprintln!(
            "{} events: {audit_rows} audit rows, {} allocations, {releases} releases",
            events.len(),
            ledger.len()
        );
        events
    }
}

/// The requests of the race and of the checks, to any of the processes.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    bearer: String,
    addresses: Arc<Vec<String>>,
}

impl Client {
    async fn post(&self, host: usize, path: &str, body: &Value, key: Option<&str>) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.addresses[host]))
            .bearer_auth(&self.bearer)
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} to process {host}: {e}"));
        Answer::read(response).await
    }

    /// GETs `path` from process `host`, asserting 200; returns the JSON body.
    async fn get(&self, host: usize, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.addresses[host]))
            .bearer_auth(&self.bearer)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} from process {host}: {e}"));
        let answer = Answer::read(response).await;
        assert_eq!(
            answer.status,
            200,
            "GET {path} from process {host}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }
}

/// What the set-up made.
#[derive(Default)]
struct World {
    workers: Vec<String>,
    pool_jobs: Vec<String>,
    /// Roots (depth 0), their children (1) and grandchildren (2).
    tree_jobs: Vec<(String, i64)>,
    /// The roots and children, which the race cancels.
    cancellable: Vec<String>,
    /// One job per keyed allocation.
    keyed_jobs: Vec<String>,
}

impl World {
    /// The race's operations in a shuffled order (the same for the same `seed`), the cancels in
    /// its second half so that the trees have allocations to free.
    fn operations(&self, seed: u64) -> Vec<Op> {
        let mut rng = Rng(seed);
        let mut ops = Vec::new();
        for _ in 0..MOVES {
            let worker = self.workers[rng.below(self.workers.len())].clone();
            let action = ["pause", "resume"][rng.below(2)];
            ops.push(Op::Move { worker, action });
        }
        ops.extend((0..SUBMITS).map(|_| Op::Submit));
        for _ in 0..POOL_ALLOCATIONS {
            let job = self.pool_jobs[rng.below(self.pool_jobs.len())].clone();
            let workers = 1 + rng.below(3) as i64;
            ops.push(Op::Allocate {
                job,
                depth: 0,
                workers,
                tree: false,
            });
        }
        for _ in 0..POOL_RELEASES {
            let job = self.pool_jobs[rng.below(self.pool_jobs.len())].clone();
            ops.push(Op::Release { job, depth: 0 });
        }
        for _ in 0..TREE_ALLOCATIONS {
            let (job, depth) = self.tree_jobs[rng.below(self.tree_jobs.len())].clone();
            let workers = 1 + rng.below(2) as i64;
            ops.push(Op::Allocate {
                job,
                depth,
                workers,
                tree: true,
            });
        }
        for _ in 0..TREE_RELEASES {
            let (job, depth) = self.tree_jobs[rng.below(self.tree_jobs.len())].clone();
            ops.push(Op::Release { job, depth });
        }
        let run = unique();
        for n in 0..KEYED_SUBMITS {
            let key = format!("scale-submit-{n}-{run}");
            let body = json!({"task_description": key, "worker_count": 2});
            ops.push(Op::Keyed {
                key,
                path: "/api/jobs/submit",
                body,
                allowed: SUBMITTED,
            });
        }
        for (n, job) in self.keyed_jobs.iter().enumerate() {
            let key = format!("scale-allocate-{n}-{run}");
            let body = json!({"job_id": job, "depth": 0, "worker_count": 1 + n % 3});
            ops.push(Op::Keyed {
                key,
                path: "/api/resources/allocate",
                body,
                allowed: GRANTED,
            });
        }
        for i in (1..ops.len()).rev() {
            ops.swap(i, rng.below(i + 1));
        }
        for job in &self.cancellable {
            let at = ops.len() / 2 + rng.below(ops.len() / 2);
            ops.insert(at, Op::Cancel { job: job.clone() });
        }
        ops
    }
}

/// A small deterministic generator (xorshift64*), so a failing order can be run again.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// One operation of the race.
#[derive(Clone, Debug)]
enum Op {
    Move {
        worker: String,
        action: &'static str,
    },
    Submit,
    Allocate {
        job: String,
        depth: i64,
        workers: i64,
        tree: bool,
    },
    Release {
        job: String,
        depth: i64,
    },
    Cancel {
        job: String,
    },
    /// The same request with one key, sent to every process at once.
    Keyed {
        key: String,
        path: &'static str,
        body: Value,
        /// What its first answer may be.
        allowed: &'static [(u16, &'static str)],
    },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Move { .. } => "move",
            Op::Submit => "submit",
            Op::Allocate { tree: false, .. } => "allocate",
            Op::Allocate { tree: true, .. } => "allocate in tree",
            Op::Release { .. } => "release",
            Op::Cancel { .. } => "cancel",
            Op::Keyed { path, .. } if path.ends_with("submit") => "keyed submit",
            Op::Keyed { .. } => "keyed allocate",
        }
    }

    fn allowed(&self) -> &'static [(u16, &'static str)] {
        match self {
            Op::Move { .. } | Op::Cancel { .. } => MOVED,
            Op::Submit => SUBMITTED,
            Op::Allocate { tree: false, .. } => GRANTED,
            Op::Allocate { tree: true, .. } => GRANTED_TO_TREE,
            Op::Release { .. } => RELEASED,
            Op::Keyed { allowed, .. } => allowed,
        }
    }

    /// Sends it to process `host` (a keyed one to every process, starting there).
    async fn run(&self, client: &Client, host: usize) -> Vec<(usize, Answer)> {
        let (path, body) = match self {
            Op::Move { worker, action } => (
                format!("/api/supervisor/workers/{worker}/{action}"),
                json!({"reason": action}),
            ),
            Op::Submit => (
                "/api/jobs/submit".to_owned(),
                json!({"task_description": "scale out", "worker_count": 2}),
            ),
            Op::Allocate {
                job,
                depth,
                workers,
                ..
            } => (
                "/api/resources/allocate".to_owned(),
                json!({"job_id": job, "depth": depth, "worker_count": workers}),
            ),
            Op::Release { job, depth } => (
                "/api/resources/release".to_owned(),
                json!({"job_id": job, "depth": depth}),
            ),
            Op::Cancel { job } => (format!("/api/jobs/{job}/cancel"), json!({"reason": "race"})),
            Op::Keyed {
                key, path, body, ..
            } => {
                let copies = (0..PROCESSES).map(|n| {
                    let host = (host + n) % PROCESSES;
                    async move {
                        (
                            host,
                            client.post(host, path, body, Some(key.as_str())).await,
                        )
                    }
                });
                return join_all(copies).await;
            }
        };
        vec![(host, client.post(host, &path, &body, None).await)]
    }
}

/// Runs `ops` over [`LANES`] concurrent lanes, operation `i` to process `i % PROCESSES`, until all
/// ran or [`RACE_BUDGET`] is over; returns each operation's answers (none if it did not run).
async fn race(client: &Client, ops: Arc<Vec<Op>>) -> Vec<Vec<(usize, Answer)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut lanes = JoinSet::new();
    for _ in 0..LANES {
        let (client, ops, next) = (client.clone(), Arc::clone(&ops), Arc::clone(&next));
        lanes.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops.len() || started.elapsed() > RACE_BUDGET {
                    return done;
                }
                done.push((i, ops[i].run(&client, i % PROCESSES).await));
            }
        });
    }
    let mut outcomes: Vec<Vec<(usize, Answer)>> = (0..ops.len()).map(|_| Vec::new()).collect();
    while let Some(lane) = lanes.join_next().await {
        for (i, answers) in lane.expect("a lane of the race") {
            outcomes[i] = answers;
        }
    }
    outcomes
}

/// A step of an audit trail: `(from_state, to_state)`.
type Step = (Option<String>, String);

#[derive(Default)]
struct Trails {
    workers: BTreeMap<String, Vec<Step>>,
    jobs: BTreeMap<String, Vec<Step>>,
}

/// The job state machine of contract §4 written out (the oracle, not core's table).
fn job_may_become(from: &str) -> &'static [&'static str] {
    match from {
        "SUBMITTED" => &["PENDING", "CANCELED"],
        "PENDING" => &["RUNNING", "CANCELED"],
        "RUNNING" => &["COMPLETED", "FAILED", "CANCELED"],
        "COMPLETED" | "FAILED" | "CANCELED" => &[],
        _ => panic!("{from} is no job state"),
    }
}

/// The channel carried every event of the outbox at least once, each subject's in `seq` order
/// (each envelope within 10 s).
async fn check_channel(subscriber: &mut redis::aio::PubSub, events: &[StoredEvent]) {
    let mut missing: HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
    let mut last_by_subject: HashMap<String, i64> = HashMap::new();
    let mut received = 0;
    let mut messages = subscriber.on_message();
    while !missing.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap_or_else(|_| panic!("{} events never came on the channel", missing.len()))
            .expect("the subscription is open");
        let payload: String = message.get_payload().unwrap();
        let envelope: Value = serde_json::from_str(&payload).unwrap();
        let seq = envelope["seq"].as_i64().unwrap();
        let subject = envelope["subject"]["id"].as_str().unwrap().to_owned();
        let last = last_by_subject.entry(subject.clone()).or_insert(0);
        assert!(*last < seq, "{subject}: seq {seq} arrived after {last}");
        *last = seq;
        missing.remove(envelope["id"].as_str().unwrap());
        received += 1;
    }
    eprintln!(
        "the channel carried all {} events ({received} envelopes)",
        events.len()
    );
}

/// The peak connections while the race runs.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Option<usize>)>,
}

impl Sampler {
    /// Postgres's connections of the database at most, and PgBouncer's clients of it at most.
    async fn stop(self) -> (usize, Option<usize>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the sampler")
    }
}

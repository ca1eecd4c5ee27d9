//! The order promise of contract §5 while writes commit in parallel: a catch-up reader polling
//! `after_seq` as fast as it can, racing sixteen writers in four workspaces spread over three
//! instances of the service on one database and one channel, misses no committed event and sees
//! none twice; a subscriber on the channel gets every event, each subject's in `seq` order.

use api_tests::{TestApp, WORKSPACE, spawn_app, spawn_app_on, supervisor_writer, token};
use orchestrator_core::auth::Scope;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const WRITERS: usize = 16;
const WORKSPACES: usize = 4;
/// How long the writers run; the reader keeps polling until they have stopped.
const WRITING: Duration = Duration::from_secs(4);

/// Moves its worker round RUNNING → PAUSED → RUNNING until `WRITING` is over; returns how many
/// moves committed.
async fn write(app: &TestApp, worker: String) -> usize {
    let token = supervisor_writer(None);
    let started = Instant::now();
    let mut moves = 0;
    for action in ["start"]
        .into_iter()
        .chain(["pause", "resume"].into_iter().cycle())
    {
        if started.elapsed() > WRITING {
            break;
        }
        let path = format!("/api/supervisor/workers/{worker}/{action}");
        let response = app.post_optional(&path, &token, None).await;
        assert_eq!(response.status(), 200, "{action} {worker}");
        moves += 1;
    }
    moves
}

/// What the reader saw: every envelope, in the order it got them.
struct Reading {
    seen: Vec<Value>,
    cursor: i64,
}

impl Reading {
    /// One catch-up page from `cursor`; every event on it must lie beyond the cursor, in order.
    async fn poll(&mut self, app: &TestApp, token: &str) -> usize {
        let page = app
            .get_ok(
                &format!("/api/events?after_seq={}&limit=100", self.cursor),
                token,
            )
            .await;
        let events = page["events"].as_array().unwrap();
        for event in events {
            let seq = event["seq"].as_i64().unwrap();
            assert!(seq > self.cursor, "seq {seq} after cursor {}", self.cursor);
            self.cursor = seq;
            self.seen.push(event.clone());
        }
        assert_eq!(page["next_after_seq"], self.cursor);
        events.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catch_up_reader_racing_writers_on_three_instances_misses_nothing() {
    let first = spawn_app().await;
    let channel = first.events_channel.clone();
    let same_channel =
        |options: spin_host::AppOptions| options.variable("events_channel", &channel);
    let second = spawn_app_on(&first.db, same_channel).await;
    let third = spawn_app_on(&first.db, same_channel).await;
    let apps = [&first, &second, &third];
    let mut subscriber = first.subscribe().await;

    let workers: Vec<String> = (0..WRITERS).map(|n| format!("w_order_{n}")).collect();
    for (n, worker) in workers.iter().enumerate() {
        apps[n % 3]
            .register_worker(worker, &format!("ws_order_{}", n % WORKSPACES))
            .await;
    }

    let reader = token(&[Scope::SupervisorRead], None);
    let writing = futures_util::future::join_all(
        workers
            .iter()
            .enumerate()
            .map(|(n, worker)| write(apps[n % 3], worker.clone())),
    );
    let reading = async {
        let mut reading = Reading {
            seen: Vec::new(),
            cursor: 0,
        };
        let mut polls = 0usize;
        let started = Instant::now();
        // Polls while the writers run, then until a page comes back empty after they stopped.
        while started.elapsed() <= WRITING + Duration::from_millis(500) {
            reading.poll(apps[polls % 3], &reader).await;
            polls += 1;
        }
        while reading.poll(apps[polls % 3], &reader).await > 0 {
            polls += 1;
        }
        (reading, polls)
    };
    let (moves, (reading, polls)) = futures_util::join!(writing, reading);
    let moves: usize = moves.iter().sum();

    // Every committed event, as the database holds it once everything has settled.
    let stored = first.events().await;
    assert_eq!(
        stored.len(),
        WRITERS + moves,
        "one event per committed change"
    );
    let stored_seqs: Vec<i64> = stored.iter().map(|event| event.seq).collect();
    let read_seqs: Vec<i64> = reading
        .seen
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        read_seqs, stored_seqs,
        "the reader saw every committed event once, in seq order ({polls} polls, {moves} moves)"
    );

    // The channel: every event at least once, and each subject's events in seq order.
    let ids: HashSet<String> = reading
        .seen
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    let received = subscriber.receive_covering(&ids).await;
    let mut last_by_subject: HashMap<&str, i64> = HashMap::new();
    for envelope in &received {
        let subject = envelope["subject"]["id"].as_str().unwrap();
        let seq = envelope["seq"].as_i64().unwrap();
        let last = last_by_subject.entry(subject).or_insert(0);
        assert!(*last < seq, "{subject}: seq {seq} arrived after {last}");
        *last = seq;
    }
    assert!(
        moves >= WRITERS * 3,
        "the writers raced: only {moves} moves"
    );
}

/// Writers that find the stamping lock held wait for its holder together, on a shared lock they
/// give back at once, rather than queueing to take it one after another (migration 0011); when
/// the holder has stamped, they find their events stamped and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_waiting_to_stamp_wait_together_and_find_their_events_stamped() {
    const WAITING: i64 = 3;
    let app = spawn_app().await;
    let mut holder = app.db.client().await.unwrap();
    let stamping = holder.transaction().await.unwrap();
    stamping
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('orchestrator:events.seq', 0))",
            &[],
        )
        .await
        .unwrap();

    let workers: Vec<String> = (0..WAITING).map(|n| format!("w_waiting_{n}")).collect();
    let registering = futures_util::future::join_all(
        workers
            .iter()
            .map(|worker| app.register_worker(worker, WORKSPACE)),
    );
    let holding = async {
        app.until_requests_wait_for_a_lock(WAITING).await;
        let waiting_shared = "SELECT count(*) FROM pg_locks \
             WHERE locktype = 'advisory' AND NOT granted AND mode = 'ShareLock' \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
        assert_eq!(app.select_int(waiting_shared).await, WAITING);
        stamping
            .execute(
                "SELECT events_stamp_turn(ARRAY(SELECT pos FROM events WHERE seq IS NULL))",
                &[],
            )
            .await
            .unwrap();
        stamping.commit().await.unwrap();
    };
    futures_util::join!(registering, holding);

    let unstamped = app
        .select_int("SELECT count(*) FROM events WHERE seq IS NULL")
        .await;
    assert_eq!(unstamped, 0);
    assert_eq!(app.events().await.len(), WAITING as usize);
}

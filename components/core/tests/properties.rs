//! Properties of the core's rules over random inputs: whatever commands clients send, in whatever order,
//! the state machines stay on the contract's tables, allocations stay within their quotas, and a cancel
//! reaches every live job below it exactly once.
//!
//! Each property replays random commands against a small model of what the database holds (state,
//! version, audit trail, per-depth allocation) and calls core in the order the handlers do. The tables
//! the results are checked against are written out again here from the contract (§4), so a wrong entry
//! in core's tables fails instead of agreeing with itself. The default case count keeps `cargo test`
//! fast; set `PROPTEST_CASES` for a longer search.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use orchestrator_core::ApiError;
use orchestrator_core::ids::{JobId, WorkerId};
use orchestrator_core::job::{
    JobNode, JobState, plan_allocation, plan_cancel, submission_transitions,
};
use orchestrator_core::lifecycle::{State, Transition, plan_transition};
use orchestrator_core::quota::{Layout, Quotas, Release, STRIPES, Usage, grant, grant_across};
use orchestrator_core::validation::{Depth, Reason, WorkerCount};
use orchestrator_core::version::check_if_match;
use orchestrator_core::worker::{WorkerAction, WorkerState, registration_transition};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::json;

const ACTOR: &str = "prop-tester";

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let from_environment = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        from_environment.cases
    } else {
        DEFAULT_CASES
    };
    ProptestConfig {
        cases,
        ..from_environment
    }
}

// --- The contract's tables (§4), the oracle ---

fn worker_contract(from: WorkerState) -> &'static [WorkerState] {
    use WorkerState::*;
    match from {
        Idle => &[Running, Terminated],
        Running => &[Paused, Completed, Failed, Terminated],
        Paused => &[Running, Terminated],
        Completed | Failed | Terminated => &[],
    }
}

fn job_contract(from: JobState) -> &'static [JobState] {
    use JobState::*;
    match from {
        Submitted => &[Pending, Canceled],
        Pending => &[Running, Canceled],
        Running => &[Completed, Failed, Canceled],
        Completed | Failed | Canceled => &[],
    }
}

/// Every state the table can reach from `start`, `start` included.
fn reachable<S: State + Ord>(start: S, table: fn(S) -> &'static [S]) -> BTreeSet<S> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(state) = queue.pop_front() {
        for &next in table(state) {
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    seen
}

// --- One object as stored: state, version and audit trail ---

/// What the database holds of one worker or job, changed only the way the handlers change it.
struct Tracked<S: State> {
    id: S::Id,
    state: S,
    version: i64,
    /// The audit rows, oldest first.
    trail: Vec<Transition<S>>,
}

impl<S: State + Ord> Tracked<S> {
    /// A new object at version 1 whose trail starts with its creation records.
    fn created(id: S::Id, records: Vec<Transition<S>>) -> Self {
        let state = records
            .last()
            .map(|record| record.to)
            .expect("a creation record");
        Self {
            id,
            state,
            version: 1,
            trail: records,
        }
    }

    fn if_match(&self, header: &IfMatch) -> Result<(), ApiError> {
        check_if_match(header.render(self.version).as_deref(), self.version)
    }

    /// Writes an accepted move: the row (one version more) and its audit record.
    fn apply(&mut self, transition: Transition<S>) {
        assert_eq!(transition.id, self.id);
        assert_eq!(
            transition.from,
            Some(self.state),
            "planned from the stored state"
        );
        assert_eq!(transition.actor, ACTOR);
        self.state = transition.to;
        self.trail.push(transition);
        self.touch();
    }

    /// Writes an accepted change that is not a move (e.g. more workers for a RUNNING job).
    fn touch(&mut self) {
        self.version += 1;
    }

    /// The trail is a path through `table` from the creation records to the current state. (How the
    /// version grows is the database's doing, not core's: what core decides of it, `If-Match`, is
    /// checked against [`IfMatch::matches`] on every command.)
    fn check(&self, table: fn(S) -> &'static [S], creation: usize, reachable: &BTreeSet<S>) {
        assert!(
            reachable.contains(&self.state),
            "{:?} is unreachable",
            self.state
        );
        for pair in self.trail.windows(2).skip(creation - 1) {
            let (before, after) = (&pair[0], &pair[1]);
            assert_eq!(after.from, Some(before.to), "the trail is a chain");
            assert!(
                table(before.to).contains(&after.to),
                "{:?} -> {:?} is not in the contract",
                before.to,
                after.to
            );
        }
        assert_eq!(self.trail.last().map(|record| record.to), Some(self.state));
    }
}

/// A refusal by the table: 409 naming the move and where the object may go instead, and the contract
/// agrees that the move is not allowed.
fn assert_refused<S: State>(
    error: &ApiError,
    id: &S::Id,
    current: S,
    requested: S,
    table: fn(S) -> &'static [S],
) {
    assert!(
        !table(current).contains(&requested),
        "{current:?} -> {requested:?} was refused"
    );
    assert_eq!(
        (error.status(), error.code()),
        (409, "INVALID_STATE_TRANSITION")
    );
    let allowed: Vec<&str> = table(current).iter().map(|state| state.as_str()).collect();
    assert_eq!(
        error.details(),
        json!({
            "id": id.as_ref(),
            "current_state": current.as_str(),
            "requested_state": requested.as_str(),
            "allowed": allowed,
        })
    );
}

/// The `If-Match` a client sends with a command.
#[derive(Debug, Clone)]
enum IfMatch {
    Absent,
    /// `"v"` of the current version.
    Current,
    /// The current version without quotes (accepted leniently).
    CurrentBare,
    Any,
    /// A version this many changes old (or, if negative, ahead).
    Stale(i64),
    /// `W/"v"`: weak tags never match.
    Weak,
}

impl IfMatch {
    fn strategy() -> impl Strategy<Value = Self> {
        prop_oneof![
            3 => Just(Self::Absent),
            2 => Just(Self::Current),
            1 => Just(Self::CurrentBare),
            1 => Just(Self::Any),
            1 => prop_oneof![-2i64..0, 1i64..4].prop_map(Self::Stale),
            1 => Just(Self::Weak),
        ]
    }

    fn render(&self, version: i64) -> Option<String> {
        match self {
            Self::Absent => None,
            Self::Current => Some(format!("\"{version}\"")),
            Self::CurrentBare => Some(version.to_string()),
            Self::Any => Some("*".to_owned()),
            Self::Stale(age) => Some(format!("\"{}\"", version - age)),
            Self::Weak => Some(format!("W/\"{version}\"")),
        }
    }

    fn matches(&self) -> bool {
        !matches!(self, Self::Stale(_) | Self::Weak)
    }
}

/// Checks `If-Match` as the handlers do before planning: 412 with the current version when stale.
/// Returns whether the command goes on.
fn passes_if_match<S: State + Ord>(tracked: &Tracked<S>, header: &IfMatch) -> bool {
    match tracked.if_match(header) {
        Ok(()) => {
            assert!(
                header.matches(),
                "{header:?} at version {}",
                tracked.version
            );
            true
        }
        Err(error) => {
            assert!(
                !header.matches(),
                "{header:?} at version {}",
                tracked.version
            );
            assert_eq!(
                error,
                ApiError::VersionMismatch {
                    current_version: tracked.version
                }
            );
            assert_eq!(error.status(), 412);
            false
        }
    }
}

fn reason_strategy() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        select(vec!["", "  ", "disk full", "operator request"]).prop_map(str::to_owned),
    )
}

// --- Workers ---

#[derive(Debug, Clone)]
struct WorkerCommand {
    action: WorkerAction,
    reason: Option<String>,
    if_match: IfMatch,
}

fn worker_command() -> impl Strategy<Value = WorkerCommand> {
    (
        select(WorkerAction::ALL.to_vec()),
        reason_strategy(),
        IfMatch::strategy(),
    )
        .prop_map(|(action, reason, if_match)| WorkerCommand {
            action,
            reason,
            if_match,
        })
}

/// One lifecycle request, in the handler's order: reason (422), `If-Match` (412), table (409).
fn run_worker_command(worker: &mut Tracked<WorkerState>, command: &WorkerCommand) {
    let given = command
        .reason
        .clone()
        .map(|text| Reason::new(text).expect("short reason"));
    let reason = match command.action.reason(given) {
        Ok(reason) => reason,
        Err(error) => {
            assert_eq!(command.action, WorkerAction::Fail);
            assert!(
                command
                    .reason
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty())
            );
            assert_eq!(error.status(), 422);
            return;
        }
    };
    if !passes_if_match(worker, &command.if_match) {
        return;
    }
    let requested = command.action.target();
    match plan_transition(&worker.id, worker.state, requested, reason, ACTOR) {
        Ok(transition) => {
            assert!(worker_contract(worker.state).contains(&requested));
            assert_eq!(transition.to, requested);
            assert_eq!(transition.reason, command.reason);
            worker.apply(transition);
        }
        Err(error) => assert_refused(&error, &worker.id, worker.state, requested, worker_contract),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random lifecycle requests never take a worker off the table, never move a finished worker, and
    /// leave an audit trail that is a legal path from registration.
    #[test]
    fn worker_commands_keep_a_legal_state_and_trail(
        commands in proptest::collection::vec(worker_command(), 0..40),
    ) {
        let id = WorkerId::parse("w_prop").unwrap();
        let mut worker = Tracked::created(id.clone(), vec![registration_transition(&id, ACTOR)]);
        let reachable = reachable(WorkerState::Idle, worker_contract);
        for command in &commands {
            let before = (worker.state, worker.version);
            run_worker_command(&mut worker, command);
            if before.0.is_terminal() {
                let after = (worker.state, worker.version);
                prop_assert_eq!(after, before, "a finished worker stays as it is");
            }
            worker.check(worker_contract, 1, &reachable);
        }
        prop_assert_eq!(worker.trail[0].from, None);
        prop_assert_eq!(worker.trail[0].to, WorkerState::Idle);
    }
}

// --- Jobs ---

#[derive(Debug, Clone)]
enum JobAction {
    /// Workers for the job at its own depth (granted: the quota is another property's concern).
    Allocate,
    /// Its workers back to the pool.
    Release,
    Complete,
    Fail,
    Cancel(Option<String>),
    /// Any move asked of the table directly.
    Move(JobState),
}

fn job_action() -> impl Strategy<Value = JobAction> {
    prop_oneof![
        3 => Just(JobAction::Allocate),
        1 => Just(JobAction::Release),
        1 => Just(JobAction::Complete),
        1 => Just(JobAction::Fail),
        1 => reason_strategy().prop_map(JobAction::Cancel),
        2 => select(JobState::ALL.to_vec()).prop_map(JobAction::Move),
    ]
}

/// A job and the workers it holds.
struct HeldJob {
    job: Tracked<JobState>,
    depth: Depth,
    held: i64,
}

impl HeldJob {
    /// Writes a planned move; a job that ends gives its workers back in the same transaction.
    fn apply(&mut self, transition: Transition<JobState>) {
        if transition.to.is_terminal() {
            self.held = 0;
        }
        self.job.apply(transition);
    }

    /// Plans `requested` and writes it if the table allows it.
    fn request(&mut self, requested: JobState) {
        let planned = plan_transition(&self.job.id, self.job.state, requested, None, ACTOR);
        self.accept(planned.map(|transition| vec![transition]), requested);
    }

    fn accept(
        &mut self,
        planned: Result<Vec<Transition<JobState>>, ApiError>,
        requested: JobState,
    ) {
        match planned {
            Ok(plan) => {
                assert!(job_contract(self.job.state).contains(&requested));
                assert_eq!(plan.len(), 1, "a job without children is canceled alone");
                for transition in plan {
                    assert_eq!(transition.to, requested);
                    self.apply(transition);
                }
            }
            Err(error) => {
                assert_refused(
                    &error,
                    &self.job.id,
                    self.job.state,
                    requested,
                    job_contract,
                );
            }
        }
    }

    fn run(&mut self, action: &JobAction) {
        match action {
            JobAction::Allocate => {
                let planned =
                    plan_allocation(&self.job.id, self.depth, self.job.state, self.depth, ACTOR);
                match planned {
                    Ok(start) => {
                        match start {
                            Some(transition) => {
                                assert_eq!(self.job.state, JobState::Pending);
                                assert_eq!(transition.to, JobState::Running);
                                self.apply(transition);
                            }
                            None => {
                                assert_eq!(self.job.state, JobState::Running);
                                self.job.touch();
                            }
                        }
                        self.held += 1;
                    }
                    Err(error) => assert_refused(
                        &error,
                        &self.job.id,
                        self.job.state,
                        JobState::Running,
                        job_contract,
                    ),
                }
            }
            JobAction::Release => {
                if self.held > 0 {
                    self.held = 0;
                    self.job.touch();
                }
            }
            JobAction::Complete => self.request(JobState::Completed),
            JobAction::Fail => self.request(JobState::Failed),
            JobAction::Cancel(reason) => {
                let node = JobNode {
                    id: self.job.id.clone(),
                    parent_id: None,
                    state: self.job.state,
                };
                let reason = reason
                    .clone()
                    .map(|text| Reason::new(text).expect("short reason"));
                let planned = plan_cancel(&self.job.id, &[node], reason, ACTOR);
                self.accept(planned, JobState::Canceled);
            }
            JobAction::Move(requested) => self.request(*requested),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random job requests never take a job off the table or move a finished one; workers are held
    /// only while RUNNING; the trail is a legal path from SUBMITTED → PENDING with one version per change.
    #[test]
    fn job_commands_keep_a_legal_state_and_trail(
        depth in 0i64..=5,
        commands in proptest::collection::vec((job_action(), IfMatch::strategy()), 0..40),
    ) {
        let id = JobId::parse("j_prop").unwrap();
        let mut job = HeldJob {
            job: Tracked::created(id.clone(), submission_transitions(&id, ACTOR).to_vec()),
            depth: Depth::new(depth).unwrap(),
            held: 0,
        };
        let reachable = reachable(JobState::Submitted, job_contract);
        for (action, if_match) in &commands {
            let before = (job.job.state, job.job.version);
            if passes_if_match(&job.job, if_match) {
                job.run(action);
            }
            if before.0.is_terminal() {
                let after = (job.job.state, job.job.version);
                prop_assert_eq!(after, before, "a finished job stays as it is");
            }
            prop_assert!(
                job.held == 0 || job.job.state == JobState::Running,
                "{:?} holds {}",
                job.job.state,
                job.held
            );
            job.job.check(job_contract, 2, &reachable);
        }
        let created: Vec<_> =
            job.job.trail[..2].iter().map(|record| (record.from, record.to)).collect();
        let submitted = Some(JobState::Submitted);
        prop_assert_eq!(
            created,
            vec![(None, JobState::Submitted), (submitted, JobState::Pending)]
        );
    }
}

// --- Allocation arithmetic ---

#[derive(Debug, Clone)]
enum PoolCommand {
    /// `POST /api/resources/allocate` for a job, at a depth that may not be the job's.
    Allocate { job: Index, depth: i64, count: i64 },
    /// `POST /api/resources/release`.
    Release { job: Index, depth: i64 },
    /// complete, fail or cancel: the job's workers go back.
    End { job: Index, to: JobState },
}

fn pool_command() -> impl Strategy<Value = PoolCommand> {
    let depth = 0i64..=5;
    let ending = select(vec![
        JobState::Completed,
        JobState::Failed,
        JobState::Canceled,
    ]);
    prop_oneof![
        4 => (any::<Index>(), depth.clone(), 1i64..=10)
            .prop_map(|(job, depth, count)| PoolCommand::Allocate { job, depth, count }),
        1 => (any::<Index>(), depth).prop_map(|(job, depth)| PoolCommand::Release { job, depth }),
        1 => (any::<Index>(), ending).prop_map(|(job, to)| PoolCommand::End { job, to }),
    ]
}

struct PoolJob {
    id: JobId,
    depth: Depth,
    state: JobState,
    held: i64,
}

/// The quota rows and the jobs holding workers from them.
struct Pool {
    /// Workers per depth as the property chose them: what `depth_quotas` must give.
    maxima: [i64; 6],
    quotas: Quotas,
    allocated: [i64; 6],
    jobs: Vec<PoolJob>,
}

impl Pool {
    /// One allocation, in the handler's order: the job's depth and state, then the quota row.
    fn allocate(&mut self, job: usize, depth: Depth, count: WorkerCount) {
        let max = self.quotas.max_workers(depth);
        assert_eq!(max, self.maxima[depth.index()], "depth {depth}'s quota");
        let allocated = &mut self.allocated[depth.index()];
        let job = &mut self.jobs[job];
        let start = match plan_allocation(&job.id, job.depth, job.state, depth, ACTOR) {
            Ok(start) => start,
            Err(error) => {
                if depth != job.depth {
                    assert_eq!(error.status(), 422);
                    assert_eq!(error.details()["fields"][0]["field"], "depth");
                } else {
                    assert!(!matches!(job.state, JobState::Pending | JobState::Running));
                    assert_eq!(error.status(), 409);
                }
                return;
            }
        };
        let available = max - *allocated;
        match grant(depth, count, max, *allocated) {
            Ok(granted) => {
                assert!(available > 0, "granted {granted} with nothing available");
                assert_eq!(granted, count.get().min(available));
                *allocated += granted;
                job.held += granted;
                if let Some(transition) = start {
                    // Contract §6: a PENDING job becomes RUNNING with its first workers.
                    assert_eq!(
                        (job.state, transition.to),
                        (JobState::Pending, JobState::Running)
                    );
                    job.state = transition.to;
                }
            }
            Err(error) => {
                assert_eq!(available, 0, "refused with {available} available");
                assert_eq!(
                    error,
                    ApiError::QuotaExceeded {
                        depth,
                        requested: count.get(),
                        available: 0
                    }
                );
                assert_eq!((error.status(), error.code()), (409, "QUOTA_EXCEEDED"));
            }
        }
    }

    /// Frees what the job holds at `depth`: all of it at its own depth, nothing elsewhere.
    fn release(&mut self, job: usize, depth: Depth) {
        let job = &mut self.jobs[job];
        let freed = if job.depth == depth { job.held } else { 0 };
        let release = Release::new(job.id.clone(), depth, freed);
        assert_eq!(release.released, freed > 0);
        self.allocated[depth.index()] -= freed;
        job.held -= freed;
    }

    fn end(&mut self, job: usize, to: JobState) {
        let job = &mut self.jobs[job];
        match plan_transition(&job.id, job.state, to, None, ACTOR) {
            Ok(transition) => {
                assert!(job_contract(job.state).contains(&to));
                self.allocated[job.depth.index()] -= job.held;
                job.held = 0;
                job.state = transition.to;
            }
            Err(error) => assert_refused(&error, &job.id, job.state, to, job_contract),
        }
    }

    /// Nothing over quota, the rows agree with the holders, and only RUNNING jobs hold workers.
    fn check(&self) {
        for depth in Depth::all() {
            let max = self.maxima[depth.index()];
            let allocated = self.allocated[depth.index()];
            assert!(
                (0..=max).contains(&allocated),
                "depth {depth}: {allocated} of {max}"
            );
            let held: i64 = self
                .jobs
                .iter()
                .filter(|job| job.depth == depth)
                .map(|job| job.held)
                .sum();
            assert_eq!(allocated, held, "depth {depth}");
            let usage = Usage::new(depth, max, allocated);
            assert_eq!(usage.available, max - allocated);
        }
        for job in &self.jobs {
            assert!(job.held >= 0);
            assert!(
                job.held == 0 || job.state == JobState::Running,
                "{} {:?} holds {}",
                job.id,
                job.state,
                job.held
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random allocations, releases and job endings against random quotas: no depth ever has more
    /// allocated than its quota, each grant is min(requested, available), and a 409 comes exactly
    /// when nothing is available.
    #[test]
    fn allocations_never_exceed_quotas(
        maxima in proptest::array::uniform6(0u32..=12),
        depths in proptest::collection::vec(0i64..=5, 1..8),
        commands in proptest::collection::vec(pool_command(), 0..60),
    ) {
        let raw: Vec<String> = maxima.iter().map(u32::to_string).collect();
        let quotas = Quotas::parse(&raw.join(",")).unwrap();
        let jobs = depths
            .iter()
            .enumerate()
            .map(|(n, &depth)| PoolJob {
                id: JobId::parse(&format!("j_{n}")).unwrap(),
                depth: Depth::new(depth).unwrap(),
                state: JobState::Pending,
                held: 0,
            })
            .collect();
        let maxima = maxima.map(i64::from);
        let mut pool = Pool { maxima, quotas, allocated: [0; 6], jobs };
        for command in &commands {
            match command {
                PoolCommand::Allocate { job, depth, count } => pool.allocate(
                    job.index(pool.jobs.len()),
                    Depth::new(*depth).unwrap(),
                    WorkerCount::new(*count).unwrap(),
                ),
                PoolCommand::Release { job, depth } => {
                    pool.release(job.index(pool.jobs.len()), Depth::new(*depth).unwrap());
                }
                PoolCommand::End { job, to } => pool.end(job.index(pool.jobs.len()), *to),
            }
            pool.check();
        }
    }

    /// A quota lowered below what is allocated grants nothing; otherwise a grant never takes more
    /// than is left.
    #[test]
    fn grants_stay_within_a_lowered_quota(
        max in 0i64..=20,
        allocated in 0i64..=40,
        count in 1i64..=10,
    ) {
        let depth = Depth::new(0).unwrap();
        let outcome = grant(depth, WorkerCount::new(count).unwrap(), max, allocated);
        if allocated < max {
            let granted = outcome.unwrap();
            prop_assert_eq!(granted, count.min(max - allocated));
            prop_assert!(allocated + granted <= max);
        } else {
            let refused = ApiError::QuotaExceeded { depth, requested: count, available: 0 };
            prop_assert_eq!(outcome, Err(refused));
        }
        let usage = Usage::new(depth, max, allocated);
        prop_assert_eq!(usage.available, (max - allocated).max(0));
    }
}

// --- Striped quotas ---

#[derive(Debug, Clone)]
enum StripeCommand {
    /// A grant for a job whose id hashes to `stripe`.
    Allocate { stripe: usize, count: i64 },
    /// A holder frees what it holds.
    Release { holder: Index },
    /// `depth_quotas` changes: the next grant meets a limit the rows were not laid out for.
    Configure { max: i64 },
}

fn stripe_command() -> impl Strategy<Value = StripeCommand> {
    prop_oneof![
        5 => (0..STRIPES, 1i64..=10)
            .prop_map(|(stripe, count)| StripeCommand::Allocate { stripe, count }),
        3 => any::<Index>().prop_map(|holder| StripeCommand::Release { holder }),
        1 => (0i64..=40).prop_map(|max| StripeCommand::Configure { max }),
    ]
}

/// One depth's rows as migrations/0010 keeps them, driven as the handlers drive them.
struct StripedDepth {
    /// The limit the rows are laid out for (`quotas.max_workers`).
    laid_out_for: i64,
    rows: Layout,
}

impl StripedDepth {
    /// `resources::allocations::allocate`: the job's own stripe when the rows follow `max` and it
    /// can cover the whole request (`store::quotas::take_from_own_stripe`), else every stripe.
    fn allocate(&mut self, max: i64, stripe: usize, count: WorkerCount) -> Result<i64, ApiError> {
        let free = self.rows.capacity[stripe] - self.rows.allocated[stripe];
        if self.laid_out_for == max && free >= count.get() {
            self.rows.allocated[stripe] += count.get();
            return Ok(count.get());
        }
        let (granted, rows) = grant_across(
            Depth::new(0).unwrap(),
            count,
            max,
            self.rows.allocated,
            stripe,
        )?;
        (self.laid_out_for, self.rows) = (max, rows);
        Ok(granted)
    }

    /// What migrations/0010's checks hold the rows to.
    fn check(&self) {
        let rows = &self.rows;
        for (capacity, allocated) in rows.capacity.iter().zip(&rows.allocated) {
            assert!((0..=*capacity).contains(allocated), "{rows:?}");
        }
        assert_eq!(
            rows.capacity.iter().sum::<i64>(),
            self.laid_out_for,
            "{rows:?}"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    /// Spread over stripes, a depth grants exactly what one row would: every grant and every 409 is
    /// the one [`grant`] gives for the depth's total, whatever stripe the job is in and however the
    /// limit moves (also below what is held), and the rows always pass the database's checks.
    #[test]
    fn striped_quotas_grant_what_one_row_would(
        initial in 0i64..=40,
        commands in proptest::collection::vec(stripe_command(), 0..120),
    ) {
        let depth = Depth::new(0).unwrap();
        let mut max = initial;
        // As migrations/0010 lays out a depth that holds nothing.
        let stripes = STRIPES as i64;
        let capacity = std::array::from_fn(|n| initial / stripes + i64::from((n as i64) < initial % stripes));
        let rows = Layout { capacity, allocated: [0; STRIPES] };
        let mut striped = StripedDepth { laid_out_for: initial, rows };
        let mut holders: Vec<(usize, i64)> = Vec::new();
        let mut total = 0;
        for command in &commands {
            match command {
                StripeCommand::Allocate { stripe, count } => {
                    let count = WorkerCount::new(*count).unwrap();
                    let expected = grant(depth, count, max, total);
                    let outcome = striped.allocate(max, *stripe, count);
                    prop_assert_eq!(&outcome, &expected, "{:?}", command);
                    if let Ok(granted) = outcome {
                        total += granted;
                        holders.push((*stripe, granted));
                    }
                }
                StripeCommand::Release { holder } if !holders.is_empty() => {
                    // `store::allocations::release`: the holder's stripe alone.
                    let (stripe, workers) = holders.swap_remove(holder.index(holders.len()));
                    striped.rows.allocated[stripe] -= workers;
                    total -= workers;
                }
                StripeCommand::Release { .. } => {}
                StripeCommand::Configure { max: next } => max = *next,
            }
            striped.check();
            prop_assert_eq!(striped.rows.allocated.iter().sum::<i64>(), total);
        }
    }

    /// A step over the whole depth keeps what every stripe holds, adds the grant to the job's own,
    /// and spreads exactly what is left free, evenly.
    #[test]
    fn a_grant_across_the_depth_spreads_what_is_left_evenly(
        max in 0i64..=1_000_000_000,
        allocated in proptest::array::uniform16(0i64..=1_000_000),
        count in 1i64..=10,
        home in 0..STRIPES,
    ) {
        let depth = Depth::new(3).unwrap();
        let count = WorkerCount::new(count).unwrap();
        let held: i64 = allocated.iter().sum();
        let outcome = grant_across(depth, count, max, allocated, home);
        prop_assert_eq!(outcome.clone().map(|(granted, _)| granted), grant(depth, count, max, held));
        let Ok((granted, layout)) = outcome else { return Ok(()) };
        let mut expected = allocated;
        expected[home] += granted;
        prop_assert_eq!(layout.allocated, expected);
        prop_assert_eq!(layout.capacity.iter().sum::<i64>(), max);
        let free: Vec<i64> = layout.capacity.iter().zip(&expected).map(|(c, a)| c - a).collect();
        let (least, most) = (free.iter().min().unwrap(), free.iter().max().unwrap());
        prop_assert!(*least >= 0 && most - least <= 1, "uneven {:?}", free);
    }

    /// A job's stripe outside the depth's rows is a bug reported as such, never a panic.
    #[test]
    fn a_stripe_outside_the_depth_is_an_internal_error(home in STRIPES..1000) {
        let outcome = grant_across(Depth::new(0).unwrap(), WorkerCount::new(1).unwrap(), 10, [0; STRIPES], home);
        prop_assert!(matches!(outcome, Err(ApiError::Internal(_))));
    }
}

// --- The cancel cascade ---

/// A forest of jobs: job `n`'s parent, when it has one, comes before it, so there is no cycle.
fn job_forest() -> impl Strategy<Value = Vec<(Option<Index>, JobState)>> {
    proptest::collection::vec(
        (
            proptest::option::weighted(0.85, any::<Index>()),
            select(JobState::ALL.to_vec()),
        ),
        1..40,
    )
}

fn job_id(n: usize) -> JobId {
    JobId::parse(&format!("j_{n}")).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Over random trees (the rows in any order, some repeated), a cancel plans the root first, then
    /// every non-terminal descendant exactly once and no other job, each after its planned ancestors.
    #[test]
    fn cancel_reaches_every_non_terminal_descendant_once(
        (forest, rows) in job_forest().prop_flat_map(|forest| {
            let order: Vec<usize> = (0..forest.len()).collect();
            (Just(forest), Just(order).prop_shuffle())
        }),
        root in any::<Index>(),
        repeated in proptest::collection::vec(any::<Index>(), 0..4),
        reason in reason_strategy(),
    ) {
        let parents: Vec<Option<usize>> = forest
            .iter()
            .enumerate()
            .map(|(n, (parent, _))| parent.as_ref().filter(|_| n > 0).map(|p| p.index(n)))
            .collect();
        let states: Vec<JobState> = forest.iter().map(|(_, state)| *state).collect();
        let node = |n: usize| JobNode {
            id: job_id(n),
            parent_id: parents[n].map(job_id),
            state: states[n],
        };
        let mut jobs: Vec<JobNode> = rows.iter().map(|&n| node(n)).collect();
        jobs.extend(repeated.iter().map(|index| node(index.index(forest.len()))));

        let root = root.index(forest.len());
        let ancestors = |mut n: usize| {
            let mut chain = Vec::new();
            while let Some(parent) = parents[n] {
                chain.push(parent);
                n = parent;
            }
            chain
        };
        let reason = reason.map(|text| Reason::new(text).unwrap());
        let planned = plan_cancel(&job_id(root), &jobs, reason.clone(), ACTOR);
        if states[root].is_terminal() {
            let error = planned.unwrap_err();
            assert_refused(&error, &job_id(root), states[root], JobState::Canceled, job_contract);
            return Ok(());
        }
        let plan = planned.unwrap();

        prop_assert_eq!(&plan[0].id, &job_id(root));
        prop_assert_eq!(plan[0].from, Some(states[root]));
        prop_assert_eq!(plan[0].reason.clone(), reason.map(Reason::into_string));
        let expected: BTreeSet<JobId> = (0..forest.len())
            .filter(|&n| !states[n].is_terminal() && ancestors(n).contains(&root))
            .map(job_id)
            .collect();
        let position: BTreeMap<&JobId, usize> =
            plan.iter().enumerate().map(|(at, transition)| (&transition.id, at)).collect();
        prop_assert_eq!(position.len(), plan.len(), "each job is planned once");
        let descendants: BTreeSet<JobId> =
            plan[1..].iter().map(|transition| transition.id.clone()).collect();
        prop_assert_eq!(&descendants, &expected);

        let cascade_reason = format!("ancestor job {} was canceled", job_id(root));
        for (at, transition) in plan.iter().enumerate() {
            let n: usize = transition.id.as_str()[2..].parse().unwrap();
            prop_assert_eq!(transition.from, Some(states[n]));
            prop_assert!(!states[n].is_terminal(), "{} is {:?}", transition.id, states[n]);
            prop_assert_eq!(transition.to, JobState::Canceled);
            prop_assert_eq!(transition.actor.as_str(), ACTOR);
            if at > 0 {
                prop_assert_eq!(transition.reason.as_deref(), Some(cascade_reason.as_str()));
            }
            for ancestor in ancestors(n) {
                if let Some(&before) = position.get(&job_id(ancestor)) {
                    let ancestor = job_id(ancestor);
                    prop_assert!(before < at, "{} comes before {}", transition.id, ancestor);
                }
            }
        }

        let unknown = plan_cancel(&JobId::parse("j_missing").unwrap(), &jobs, None, ACTOR);
        prop_assert_eq!(unknown.unwrap_err().status(), 404);
    }
}

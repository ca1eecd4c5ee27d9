//! The job lifecycle (contract §4): its table, the two records a submission writes, and cancellation of a
//! whole job tree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::events::{EventType, SubjectKind};
use crate::ids::{JobId, WorkspaceId};
use crate::lifecycle::{State, Transition, parse_state, plan_transition};
use crate::validation::{Depth, InvalidValue, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Submitted,
    Pending,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl State for JobState {
    type Id = JobId;
    const SUBJECT: SubjectKind = SubjectKind::Job;
    const CHANGED: EventType = EventType::JobStateChanged;
    const ALL: &'static [Self] = &[
        Self::Submitted,
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "SUBMITTED",
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
        }
    }

    fn allowed_next(self) -> &'static [Self] {
        use JobState::*;
        match self {
            Submitted => &[Pending, Canceled],
            Pending => &[Running, Canceled],
            Running => &[Completed, Failed, Canceled],
            Completed | Failed | Canceled => &[],
        }
    }
}

impl FromStr for JobState {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_state(s)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The audit records of a submission, in order: created as SUBMITTED (`from: None`), then PENDING
/// (*compat*: the response already says PENDING).
pub fn submission_transitions(id: &JobId, actor: &str) -> [Transition<JobState>; 2] {
    let record = |from, to| Transition {
        id: id.clone(),
        from,
        to,
        reason: None,
        actor: actor.to_owned(),
    };
    [
        record(None, JobState::Submitted),
        record(Some(JobState::Submitted), JobState::Pending),
    ]
}

/// What a submission needs to know of the parent it names, read under a lock that keeps the parent
/// from finishing until the child is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentJob {
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub depth: Depth,
    pub state: JobState,
}

/// Checks that a job at `depth` in `workspace` may be submitted under the parent it names, as loaded
/// (`None`: no such job). A parent in another workspace reads exactly like a missing one (422), so the
/// answer reveals nothing about other workspaces; a wrong depth is 422; a terminal parent is 409.
pub fn check_parent(
    requested: &JobId,
    parent: Option<&ParentJob>,
    workspace: &WorkspaceId,
    depth: Depth,
) -> Result<(), ApiError> {
    let Some(parent) = parent.filter(|parent| &parent.workspace_id == workspace) else {
        return Err(ApiError::invalid(
            "parent_job_id",
            format!("no job {requested} in workspace {workspace}"),
        ));
    };
    let expected = parent.depth.get() + 1;
    if depth.get() != expected {
        return Err(ApiError::invalid(
            "depth",
            format!("must be {expected}, one below the parent job's depth"),
        ));
    }
    if parent.state.is_terminal() {
        return Err(ApiError::ParentTerminal {
            parent_job_id: parent.id.as_str().to_owned(),
            parent_state: parent.state.as_str(),
        });
    }
    Ok(())
}

/// Checks an allocation for a job at `job_depth` in `state`, asking for workers at `depth`, and plans
/// the move it implies. Workers are only granted at the job's own depth (422 otherwise). Allocating
/// runs the job: a PENDING job starts (the returned transition), a RUNNING one keeps running (`None`),
/// and any other state is refused as the move to RUNNING that the table forbids (409).
pub fn plan_allocation(
    id: &JobId,
    job_depth: Depth,
    state: JobState,
    depth: Depth,
    actor: &str,
) -> Result<Option<Transition<JobState>>, ApiError> {
    if depth != job_depth {
        return Err(ApiError::invalid(
            "depth",
            format!("must be the depth of job {id}, which is {job_depth}"),
        ));
    }
    if state == JobState::Running {
        return Ok(None);
    }
    plan_transition(id, state, JobState::Running, None, actor).map(Some)
}

/// One job of a tree as loaded for cancellation (the root and all its descendants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobNode {
    pub id: JobId,
    pub parent_id: Option<JobId>,
    pub state: JobState,
}

/// Plans cancelling `root` and, in the same transaction, every non-terminal descendant (contract §6).
///
/// The root must be cancelable (409 otherwise) and present in `jobs` (404 otherwise). Descendants are
/// found through `parent_id` at any depth, including below terminal jobs, and each gets exactly one
/// record even if `jobs` repeats a row or contains a cycle. Parents come before their children.
pub fn plan_cancel(
    root: &JobId,
    jobs: &[JobNode],
    reason: Option<Reason>,
    actor: &str,
) -> Result<Vec<Transition<JobState>>, ApiError> {
    let root_state = jobs
        .iter()
        .find(|job| &job.id == root)
        .ok_or_else(|| root.not_found())?
        .state;
    let mut plan = vec![plan_transition(
        root,
        root_state,
        JobState::Canceled,
        reason,
        actor,
    )?];

    let mut children: BTreeMap<&JobId, Vec<&JobNode>> = BTreeMap::new();
    for job in jobs {
        if let Some(parent) = &job.parent_id {
            children.entry(parent).or_default().push(job);
        }
    }
    let cascade_reason = format!("ancestor job {root} was canceled");
    let mut seen: BTreeSet<&JobId> = BTreeSet::from([root]);
    let mut queue = VecDeque::from([root]);
    while let Some(parent) = queue.pop_front() {
        for child in children.get(parent).into_iter().flatten() {
            if !seen.insert(&child.id) {
                continue;
            }
            queue.push_back(&child.id);
            if !child.state.is_terminal() {
                plan.push(Transition {
                    id: child.id.clone(),
                    from: Some(child.state),
                    to: JobState::Canceled,
                    reason: Some(cascade_reason.clone()),
                    actor: actor.to_owned(),
                });
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::JobState::*;
    use super::*;
    use crate::lifecycle::testing::check_machine;

    fn id(raw: &str) -> JobId {
        JobId::parse(raw).unwrap()
    }

    fn node(raw: &str, parent: Option<&str>, state: JobState) -> JobNode {
        JobNode {
            id: id(raw),
            parent_id: parent.map(id),
            state,
        }
    }

    #[test]
    fn every_pair_follows_the_contract_table() {
        let table: &[(JobState, &[JobState])] = &[
            (Submitted, &[Pending, Canceled]),
            (Pending, &[Running, Canceled]),
            (Running, &[Completed, Failed, Canceled]),
            (Completed, &[]),
            (Failed, &[]),
            (Canceled, &[]),
        ];
        check_machine(table, id("j_0123456789ab"));
    }

    #[test]
    fn submission_writes_submitted_then_pending() {
        let [first, second] = submission_transitions(&id("j_1"), "alice");
        assert_eq!((first.from, first.to), (None, Submitted));
        assert_eq!((second.from, second.to), (Some(Submitted), Pending));
        assert_eq!(second.actor, "alice");
    }

    fn parent(state: JobState, depth: i64, workspace: &str) -> ParentJob {
        ParentJob {
            id: id("j_p"),
            workspace_id: WorkspaceId::parse(workspace).unwrap(),
            depth: Depth::new(depth).unwrap(),
            state,
        }
    }

    #[test]
    fn a_child_goes_one_level_below_a_live_parent_of_its_workspace() {
        let ws = WorkspaceId::parse("ws").unwrap();
        let one = Depth::new(1).unwrap();
        let check =
            |parent: Option<&ParentJob>, depth| check_parent(&id("j_p"), parent, &ws, depth);
        for state in [Submitted, Pending, Running] {
            assert_eq!(check(Some(&parent(state, 0, "ws")), one), Ok(()));
        }

        let missing = check(None, one).unwrap_err();
        let elsewhere = check(Some(&parent(Running, 0, "other")), one).unwrap_err();
        assert_eq!(missing, elsewhere, "another workspace reads as missing");
        assert_eq!(
            missing.details(),
            json!({"fields": [{"field": "parent_job_id", "message": "no job j_p in workspace ws"}]})
        );

        let wrong_depth = check(Some(&parent(Running, 1, "ws")), one).unwrap_err();
        assert_eq!(wrong_depth.status(), 422);
        assert_eq!(wrong_depth.details()["fields"][0]["field"], "depth");

        for state in [Completed, Failed, Canceled] {
            let error = check(Some(&parent(state, 0, "ws")), one).unwrap_err();
            assert_eq!(
                (error.status(), error.code()),
                (409, "INVALID_STATE_TRANSITION")
            );
            assert_eq!(
                error.details(),
                json!({"parent_job_id": "j_p", "parent_state": state.as_str()})
            );
            assert_eq!(
                error.message(),
                format!("Job j_p is {state}: no child job can be submitted under it")
            );
        }
    }

    #[test]
    fn allocating_starts_a_pending_job_and_keeps_a_running_one() {
        let job = id("j_1");
        let zero = Depth::new(0).unwrap();
        let started = plan_allocation(&job, zero, Pending, zero, "alice")
            .unwrap()
            .unwrap();
        assert_eq!((started.from, started.to), (Some(Pending), Running));
        assert_eq!(started.actor, "alice");
        assert_eq!(
            plan_allocation(&job, zero, Running, zero, "alice"),
            Ok(None)
        );

        let wrong_depth = plan_allocation(&job, zero, Running, Depth::new(1).unwrap(), "a");
        assert_eq!(
            wrong_depth.unwrap_err().details(),
            json!({"fields": [{"field": "depth", "message": "must be the depth of job j_1, which is 0"}]})
        );
        for state in [Submitted, Completed, Failed, Canceled] {
            let error = plan_allocation(&job, zero, state, zero, "a").unwrap_err();
            assert_eq!(error.status(), 409, "{state}");
            assert_eq!(error.details()["requested_state"], "RUNNING");
        }
    }

    #[test]
    fn cancel_reaches_every_non_terminal_descendant_once() {
        let jobs = vec![
            node("root", None, Running),
            node("a", Some("root"), Pending),
            node("b", Some("root"), Completed),
            node("a1", Some("a"), Submitted),
            node("b1", Some("b"), Running), // below a terminal job: still canceled
            node("b1x", Some("b1"), Failed),
            node("b1y", Some("b1"), Running),
            node("a1", Some("a"), Submitted), // duplicate row
            node("other", None, Running),     // not in the tree
        ];
        let plan = plan_cancel(
            &id("root"),
            &jobs,
            Some(Reason::new("stop").unwrap()),
            "bob",
        )
        .unwrap();
        let ids: Vec<&str> = plan.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["root", "a", "a1", "b1", "b1y"]);
        assert!(plan.iter().all(|t| t.to == Canceled && t.actor == "bob"));
        assert_eq!(plan[0].reason.as_deref(), Some("stop"));
        assert_eq!(plan[0].from, Some(Running));
        assert_eq!(plan[3].from, Some(Running));
        assert_eq!(
            plan[1].reason.as_deref(),
            Some("ancestor job root was canceled")
        );
    }

    #[test]
    fn cancel_survives_cycles() {
        let jobs = vec![
            node("root", None, Pending),
            node("a", Some("root"), Pending),
            node("root", Some("a"), Pending),
        ];
        let plan = plan_cancel(&id("root"), &jobs, None, "x").unwrap();
        assert_eq!(plan.len(), 2);
    }

    #[test]
    fn cancel_of_terminal_or_unknown_root_fails() {
        let jobs = vec![
            node("root", None, Completed),
            node("a", Some("root"), Running),
        ];
        let error = plan_cancel(&id("root"), &jobs, None, "x").unwrap_err();
        assert_eq!(error.status(), 409);
        assert_eq!(
            error.message(),
            "Job root cannot go from COMPLETED to CANCELED"
        );
        assert_eq!(
            plan_cancel(&id("nope"), &jobs, None, "x")
                .unwrap_err()
                .status(),
            404
        );
    }
}

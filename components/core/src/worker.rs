//! The worker lifecycle (contract §4) and the lifecycle endpoints that drive it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::events::{EventType, SubjectKind};
use crate::ids::WorkerId;
use crate::lifecycle::{State, Transition, parse_state};
use crate::validation::{InvalidValue, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerState {
    Idle,
    Running,
    Paused,
    Completed,
    Failed,
    Terminated,
}

impl State for WorkerState {
    type Id = WorkerId;
    const SUBJECT: SubjectKind = SubjectKind::Worker;
    const CHANGED: EventType = EventType::WorkerStateChanged;
    const ALL: &'static [Self] = &[
        Self::Idle,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Terminated,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Terminated => "TERMINATED",
        }
    }

    fn allowed_next(self) -> &'static [Self] {
        use WorkerState::*;
        match self {
            Idle => &[Running, Terminated],
            Running => &[Paused, Completed, Failed, Terminated],
            Paused => &[Running, Terminated],
            Completed | Failed | Terminated => &[],
        }
    }
}

impl FromStr for WorkerState {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_state(s)
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/supervisor/workers/{id}/<action>`. Each action names its target state and the table
/// decides whether the worker may go there (so `resume` of an IDLE worker starts it, as the table allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerAction {
    Start,
    Pause,
    Resume,
    Complete,
    Fail,
    Terminate,
}

impl WorkerAction {
    pub const ALL: [WorkerAction; 6] = [
        Self::Start,
        Self::Pause,
        Self::Resume,
        Self::Complete,
        Self::Fail,
        Self::Terminate,
    ];

    /// The last path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Complete => "complete",
            Self::Fail => "fail",
            Self::Terminate => "terminate",
        }
    }

    pub fn from_path_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == segment)
    }

    pub fn target(self) -> WorkerState {
        match self {
            Self::Start | Self::Resume => WorkerState::Running,
            Self::Pause => WorkerState::Paused,
            Self::Complete => WorkerState::Completed,
            Self::Fail => WorkerState::Failed,
            Self::Terminate => WorkerState::Terminated,
        }
    }

    /// `fail` must say why (`{reason}` is required); the others take an optional reason.
    pub fn requires_reason(self) -> bool {
        self == Self::Fail
    }

    /// The reason to record for this action. A failure nobody can explain is useless in the audit trail,
    /// so for `fail` a missing or blank reason is a 422 on `reason`; the other actions take it as given.
    pub fn reason(self, given: Option<Reason>) -> Result<Option<Reason>, ApiError> {
        let blank = given.as_ref().is_none_or(|r| r.as_str().trim().is_empty());
        if self.requires_reason() && blank {
            return Err(ApiError::invalid(
                "reason",
                format!("is required to {} a worker", self.as_str()),
            ));
        }
        Ok(given)
    }
}

/// The first audit record of a worker: registered IDLE (`from: None`), so its trail starts at
/// registration and every later move has a record before it.
pub fn registration_transition(id: &WorkerId, actor: &str) -> Transition<WorkerState> {
    Transition {
        id: id.clone(),
        from: None,
        to: WorkerState::Idle,
        reason: None,
        actor: actor.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerState::*;
    use super::*;
    use crate::lifecycle::testing::check_machine;

    #[test]
    fn every_pair_follows_the_contract_table() {
        let table: &[(WorkerState, &[WorkerState])] = &[
            (Idle, &[Running, Terminated]),
            (Running, &[Paused, Completed, Failed, Terminated]),
            (Paused, &[Running, Terminated]),
            (Completed, &[]),
            (Failed, &[]),
            (Terminated, &[]),
        ];
        check_machine(table, WorkerId::parse("w_1").unwrap());
    }

    #[test]
    fn completed_to_paused_reads_like_the_contract() {
        let id = WorkerId::parse("w_1").unwrap();
        let error =
            crate::lifecycle::plan_transition(&id, Completed, Paused, None, "x").unwrap_err();
        assert_eq!(
            error.message(),
            "Worker w_1 cannot go from COMPLETED to PAUSED"
        );
    }

    #[test]
    fn actions_map_to_targets() {
        let expected = [
            ("start", Running),
            ("pause", Paused),
            ("resume", Running),
            ("complete", Completed),
            ("fail", Failed),
            ("terminate", Terminated),
        ];
        for (segment, target) in expected {
            let action = WorkerAction::from_path_segment(segment).unwrap();
            assert_eq!(action.target(), target);
            assert_eq!(action.requires_reason(), segment == "fail");
        }
        assert_eq!(WorkerAction::from_path_segment("heartbeat"), None);
        assert_eq!("PAUSED".parse::<WorkerState>(), Ok(Paused));
        assert_eq!(Paused.to_string(), "PAUSED");
    }

    #[test]
    fn only_fail_insists_on_a_reason() {
        let reason = |text: &str| Some(Reason::new(text).unwrap());
        for action in WorkerAction::ALL {
            assert_eq!(action.reason(reason("why")).unwrap(), reason("why"));
            for blank in [None, reason(""), reason("  ")] {
                let outcome = action.reason(blank.clone());
                if action == WorkerAction::Fail {
                    let error = outcome.unwrap_err();
                    assert_eq!(error.status(), 422);
                    assert_eq!(error.details()["fields"][0]["field"], "reason");
                } else {
                    assert_eq!(outcome.unwrap(), blank);
                }
            }
        }
    }

    #[test]
    fn registration_starts_the_trail_at_idle() {
        let id = WorkerId::parse("w_1").unwrap();
        let record = registration_transition(&id, "alice");
        assert_eq!((record.from, record.to), (None, Idle));
        assert_eq!(
            (record.id, record.actor, record.reason),
            (id, "alice".to_owned(), None)
        );
    }
}

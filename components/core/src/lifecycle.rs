//! What the worker and job state machines have in common: the rule that a move must be in the table, the
//! 409 when it is not, and the audit record of a move that is.
//!
//! Each machine ([`crate::worker::WorkerState`], [`crate::job::JobState`]) only supplies its table;
//! [`plan_transition`] decides. Planning is pure: the caller writes the returned [`Transition`] (audit
//! row + event) in the same transaction as the state change.

use std::fmt;

use crate::error::ApiError;
use crate::events::{EventType, SubjectKind};
use crate::validation::{InvalidValue, Reason};

/// A state of a lifecycle, with its transition table.
pub trait State: Copy + Eq + fmt::Debug + 'static {
    /// The id of the things in this lifecycle (`WorkerId`, `JobId`).
    type Id: Clone + fmt::Debug + PartialEq + AsRef<str>;
    /// What the events and messages call them.
    const SUBJECT: SubjectKind;
    /// The event a transition emits.
    const CHANGED: EventType;
    /// Every state, in the contract's order (e.g. for `by_status` counts).
    const ALL: &'static [Self];

    /// The wire name, e.g. `"RUNNING"`.
    fn as_str(self) -> &'static str;

    /// Where this state may go; empty for terminal states.
    fn allowed_next(self) -> &'static [Self];

    fn is_terminal(self) -> bool {
        self.allowed_next().is_empty()
    }

    fn can_become(self, next: Self) -> bool {
        self.allowed_next().contains(&next)
    }
}

/// Reads a wire name back, e.g. a `status` query parameter or a database column.
pub fn parse_state<S: State>(name: &str) -> Result<S, InvalidValue> {
    S::ALL
        .iter()
        .copied()
        .find(|state| state.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = S::ALL.iter().map(|s| s.as_str()).collect();
            InvalidValue::new(format!("must be one of {}", names.join(", ")))
        })
}

/// One accepted move: the audit row `{from_state, to_state, reason, actor}` (the database adds `at`) and
/// the source of the `*.state.changed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition<S: State> {
    pub id: S::Id,
    /// `None` only for the first record of a new object (a job's SUBMITTED).
    pub from: Option<S>,
    pub to: S,
    pub reason: Option<String>,
    /// The token's `sub`.
    pub actor: String,
}

/// Checks `current → requested` against the table. Staying in the same state is not a move and is
/// refused like any other forbidden one (409 with `{id, current_state, requested_state, allowed}`).
pub fn plan_transition<S: State>(
    id: &S::Id,
    current: S,
    requested: S,
    reason: Option<Reason>,
    actor: &str,
) -> Result<Transition<S>, ApiError> {
    if !current.can_become(requested) {
        return Err(ApiError::InvalidStateTransition {
            subject: S::SUBJECT,
            id: id.as_ref().to_owned(),
            current_state: current.as_str(),
            requested_state: requested.as_str(),
            allowed: current.allowed_next().iter().map(|s| s.as_str()).collect(),
        });
    }
    Ok(Transition {
        id: id.clone(),
        from: Some(current),
        to: requested,
        reason: reason.map(Reason::into_string),
        actor: actor.to_owned(),
    })
}

/// Table-driven checks shared by both machines' tests.
#[cfg(test)]
pub(crate) mod testing {
    use serde::Serialize;
    use serde_json::json;

    use super::*;

    /// Checks every ordered pair of states against `table` (state → allowed targets, in contract order),
    /// including the same-state case, and the wire names against serde.
    pub(crate) fn check_machine<S: State + Serialize>(table: &[(S, &[S])], id: S::Id) {
        assert_eq!(table.len(), S::ALL.len(), "table covers every state");
        for &(from, allowed) in table {
            assert_eq!(from.allowed_next(), allowed, "{from:?}");
            assert_eq!(from.is_terminal(), allowed.is_empty());
            assert_eq!(json!(from), json!(from.as_str()));
            assert_eq!(parse_state::<S>(from.as_str()), Ok(from));
            for &to in S::ALL {
                let planned = plan_transition(&id, from, to, None, "tester");
                if allowed.contains(&to) {
                    let transition = planned.unwrap();
                    assert_eq!((transition.from, transition.to), (Some(from), to));
                    assert_eq!(transition.actor, "tester");
                } else {
                    let error = planned.unwrap_err();
                    assert_eq!(error.status(), 409, "{from:?} -> {to:?}");
                    let allowed_names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                    assert_eq!(
                        error.details(),
                        json!({
                            "id": id.as_ref(),
                            "current_state": from.as_str(),
                            "requested_state": to.as_str(),
                            "allowed": allowed_names,
                        })
                    );
                    assert_eq!(
                        error.message(),
                        format!(
                            "{} {} cannot go from {} to {}",
                            S::SUBJECT.noun(),
                            id.as_ref(),
                            from.as_str(),
                            to.as_str()
                        )
                    );
                }
            }
        }
        assert!(parse_state::<S>("running").is_err());
    }
}

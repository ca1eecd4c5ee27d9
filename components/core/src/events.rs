//! Domain events (contract §5): what happened, to which subject, by whom.
//!
//! A handler builds a [`NewEvent`] and writes it to the outbox in the transaction of the change it
//! describes; the database assigns `id` and `seq`, and publishing wraps the row in an [`Envelope`], the
//! exact JSON that goes to Redis and to `GET /api/events`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ids::{JobId, WorkerId, WorkspaceId};
use crate::lifecycle::{State, Transition};
use crate::quota::{Grant, Release};
use crate::time::rfc3339_millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "worker.registered")]
    WorkerRegistered,
    #[serde(rename = "worker.state.changed")]
    WorkerStateChanged,
    #[serde(rename = "job.submitted")]
    JobSubmitted,
    #[serde(rename = "job.state.changed")]
    JobStateChanged,
    #[serde(rename = "resources.allocated")]
    ResourcesAllocated,
    #[serde(rename = "resources.released")]
    ResourcesReleased,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        Self::WorkerRegistered,
        Self::WorkerStateChanged,
        Self::JobSubmitted,
        Self::JobStateChanged,
        Self::ResourcesAllocated,
        Self::ResourcesReleased,
    ];

    /// The wire name, e.g. for a `type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkerRegistered => "worker.registered",
            Self::WorkerStateChanged => "worker.state.changed",
            Self::JobSubmitted => "job.submitted",
            Self::JobStateChanged => "job.state.changed",
            Self::ResourcesAllocated => "resources.allocated",
            Self::ResourcesReleased => "resources.released",
        }
    }

    /// Reads a stored `type` column back.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// What kind of thing an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Worker,
    Job,
    Allocation,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 3] = [Self::Worker, Self::Job, Self::Allocation];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Job => "job",
            Self::Allocation => "allocation",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Capitalised, for sentences ("Worker w_1 cannot go from …").
    pub fn noun(self) -> &'static str {
        match self {
            Self::Worker => "Worker",
            Self::Job => "Job",
            Self::Allocation => "Allocation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub kind: SubjectKind,
    pub id: String,
}

/// An event before the database has given it an id, a sequence number and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: EventType,
    pub workspace_id: WorkspaceId,
    pub subject: Subject,
    pub actor: String,
    pub data: Value,
}

impl NewEvent {
    /// `data` is the registered worker as the API returns it.
    pub fn worker_registered(
        worker: &WorkerId,
        workspace: &WorkspaceId,
        actor: &str,
        data: Value,
    ) -> Self {
        Self::new(
            EventType::WorkerRegistered,
            workspace,
            SubjectKind::Worker,
            worker.as_str(),
            actor,
            data,
        )
    }

    /// `data` is the submitted job as the API returns it.
    pub fn job_submitted(job: &JobId, workspace: &WorkspaceId, actor: &str, data: Value) -> Self {
        Self::new(
            EventType::JobSubmitted,
            workspace,
            SubjectKind::Job,
            job.as_str(),
            actor,
            data,
        )
    }

    /// `worker.state.changed` or `job.state.changed` with `data: {"from", "to", "reason"}`.
    pub fn state_changed<S: State>(transition: &Transition<S>, workspace: &WorkspaceId) -> Self {
        let data = json!({
            "from": transition.from.map(S::as_str),
            "to": transition.to.as_str(),
            "reason": transition.reason,
        });
        Self::new(
            S::CHANGED,
            workspace,
            S::SUBJECT,
            transition.id.as_ref(),
            &transition.actor,
            data,
        )
    }

    /// About the new allocation; `data` is the allocate response.
    pub fn resources_allocated(grant: &Grant, workspace: &WorkspaceId, actor: &str) -> Self {
        Self::new(
            EventType::ResourcesAllocated,
            workspace,
            SubjectKind::Allocation,
            grant.allocation_id.as_str(),
            actor,
            json!(grant),
        )
    }

    /// About the job whose holdings at one depth were freed (one or several allocations);
    /// `data` is the release response.
    pub fn resources_released(release: &Release, workspace: &WorkspaceId, actor: &str) -> Self {
        Self::new(
            EventType::ResourcesReleased,
            workspace,
            SubjectKind::Job,
            release.job_id.as_str(),
            actor,
            json!(release),
        )
    }

    fn new(
        event_type: EventType,
        workspace: &WorkspaceId,
        kind: SubjectKind,
        id: &str,
        actor: &str,
        data: Value,
    ) -> Self {
        Self {
            event_type,
            workspace_id: workspace.clone(),
            subject: Subject {
                kind,
                id: id.to_owned(),
            },
            actor: actor.to_owned(),
            data,
        }
    }
}

/// The published form of an event, field for field as contract §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// A UUID, so consumers can drop the duplicates of at-least-once delivery.
    pub id: String,
    /// Strictly increasing per database: the catch-up cursor.
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub occurred_at: String,
    pub workspace_id: WorkspaceId,
    pub subject: Subject,
    pub actor: String,
    pub data: Value,
}

impl Envelope {
    pub fn new(id: String, seq: i64, occurred_at_unix_millis: i64, event: NewEvent) -> Self {
        Self {
            id,
            seq,
            event_type: event.event_type,
            occurred_at: rfc3339_millis(occurred_at_unix_millis),
            workspace_id: event.workspace_id,
            subject: event.subject,
            actor: event.actor,
            data: event.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::plan_transition;
    use crate::validation::Reason;
    use crate::worker::WorkerState;

    #[test]
    fn wire_names_match_serde_and_parse_back() {
        for event_type in EventType::ALL {
            assert_eq!(json!(event_type), json!(event_type.as_str()));
            assert_eq!(EventType::parse(event_type.as_str()), Some(event_type));
        }
        for kind in SubjectKind::ALL {
            assert_eq!(json!(kind), json!(kind.as_str()));
            assert_eq!(SubjectKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("job.deleted"), None);
    }

    #[test]
    fn state_change_envelope_is_exactly_the_contract_shape() {
        let worker = WorkerId::parse("w_1").unwrap();
        let workspace = WorkspaceId::parse("team-a").unwrap();
        let transition = plan_transition(
            &worker,
            WorkerState::Running,
            WorkerState::Paused,
            Some(Reason::new("maintenance").unwrap()),
            "alice",
        )
        .unwrap();
        let event = NewEvent::state_changed(&transition, &workspace);
        let envelope = Envelope::new(
            "6f1c2a9e-0000-4000-8000-000000000001".into(),
            42,
            1_795_687_200_123,
            event,
        );
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            json,
            json!({
                "id": "6f1c2a9e-0000-4000-8000-000000000001",
                "seq": 42,
                "type": "worker.state.changed",
                "occurred_at": "2026-11-26T10:00:00.123Z",
                "workspace_id": "team-a",
                "subject": {"kind": "worker", "id": "w_1"},
                "actor": "alice",
                "data": {"from": "RUNNING", "to": "PAUSED", "reason": "maintenance"}
            })
        );
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
    }
}

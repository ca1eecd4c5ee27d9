//! Live reads: what a client holding a request open asks for, and what it is sent.
//!
//! - The event stream (`GET /api/events/stream`): where it resumes, which events it carries, and
//!   its server-sent-event frames.
//! - Waiting reads (`GET /api/jobs/{id}`, `GET /api/supervisor/workers/{id}`): how long to wait,
//!   and for which version to pass.
//!
//! The shells do the waiting; everything decided about it is here.

use std::fmt::Write as _;

use crate::error::ApiError;
use crate::events::{Envelope, EventType};
use crate::ids::WorkspaceId;
use crate::query::Query;
use crate::validation::{BoundedInt, NonNegative};

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After this `seq`.
    After(i64),
    /// With the last this many events it would carry (`tail=`): what a dashboard opening shows,
    /// without replaying the whole history.
    Tail(i64),
}

type TailLength = BoundedInt<1, 500>;

/// Where a stream starts: after the `Last-Event-ID` a reconnecting client sends, else after the
/// `after_seq` it asked for, else with the `tail` it asked for, else from the beginning. The header
/// wins because a browser reconnects with the URL it started with and the header of where it got to.
pub fn resume(last_event_id: Option<&str>, query: &Query) -> Result<Resume, ApiError> {
    let after_seq = query.field::<NonNegative>("after_seq")?;
    let tail = query.field::<TailLength>("tail")?;
    if let Some(id) = last_event_id {
        return id
            .trim()
            .parse::<NonNegative>()
            .map(|seq| Resume::After(seq.get()))
            .map_err(|e| e.at("Last-Event-ID"));
    }
    match (after_seq, tail) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "tail",
            "cannot be combined with after_seq",
        )),
        (Some(seq), None) => Ok(Resume::After(seq.get())),
        (None, Some(tail)) => Ok(Resume::Tail(tail.get())),
        (None, None) => Ok(Resume::After(0)),
    }
}

/// The workspace doorbells a published batch rings, each with the `seq` it rings with: every
/// workspace in the batch with its last event's. Once per workspace, however many of its events the
/// batch holds (a drained backlog holds hundreds). The doorbell of all workspaces is the head the
/// publishing script keeps itself (the newest `seq` it sent).
pub fn doorbells(batch: &[Envelope]) -> Vec<(&WorkspaceId, i64)> {
    let mut rings: Vec<(&WorkspaceId, i64)> = Vec::new();
    for event in batch {
        match rings
            .iter_mut()
            .find(|(rung, _)| *rung == &event.workspace_id)
        {
            Some(ring) => ring.1 = ring.1.max(event.seq),
            None => rings.push((&event.workspace_id, event.seq)),
        }
    }
    rings
}

/// Which events a stream carries, beyond the caller's workspace: `types=` (comma-separated event
/// types) and `subject=` (the id of the worker, job or allocation the event is about).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFilter {
    types: Option<Vec<EventType>>,
    subject: Option<String>,
}

impl StreamFilter {
    pub fn from_query(query: &Query) -> Result<Self, ApiError> {
        let types = match query.get("types") {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .map(|name| {
                        EventType::parse(name).ok_or_else(|| {
                            ApiError::invalid("types", format!("{name:?} is not an event type"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let subject = match query.get("subject") {
            Some("") => return Err(ApiError::invalid("subject", "must not be empty")),
            subject => subject.map(str::to_owned),
        };
        Ok(Self { types, subject })
    }

    pub fn matches(&self, event: &Envelope) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(&event.event_type))
            && self
                .subject
                .as_ref()
                .is_none_or(|subject| *subject == event.subject.id)
    }
}

/// Appends one event as a server-sent event: `id` is its `seq`, so a client's `Last-Event-ID`
/// is the catch-up cursor, and `data` is the envelope the channel carries (JSON has no newline).
pub fn push_event_frame(frame: &mut String, event: &Envelope) {
    let data = serde_json::to_string(event).expect("an envelope is JSON");
    // Writing to a String cannot fail.
    let _ = write!(
        frame,
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.seq,
        event.event_type.as_str()
    );
}

/// A comment line: it keeps proxies and clients from timing out an idle stream.
pub const KEEP_ALIVE_FRAME: &str = ": keep-alive\n\n";

/// The last frame of a stream that ends itself: when the client should reconnect.
pub fn retry_frame(reconnect_millis: u64) -> String {
    format!("retry: {reconnect_millis}\n\n")
}

/// The longest a read waits for a change.
pub const MAX_WAIT_SECONDS: i64 = 60;

type WaitSeconds = BoundedInt<0, MAX_WAIT_SECONDS>;

/// A read that waits until its object changes from what the client already has.
///
/// Asked for with `?wait=30&after_version=3` or, in HTTP's own words, `Prefer: wait=30` with
/// `If-None-Match: "3"`. Without a wait it is a plain conditional read. When the wait ends with the
/// object as the client knows it, the answer is `304 Not Modified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRead {
    known: Known,
    pub wait_millis: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// `after_version=n`: unchanged while the version is at most n.
    UpTo(i64),
    /// `If-None-Match`: unchanged while the version is one of these (`None` for `*`).
    Tags(Option<Vec<i64>>),
}

impl WaitingRead {
    /// `None` when the request is a plain read, which includes a `wait` with nothing to compare
    /// against: the client has no version of the object, so whatever version it has now is news to it.
    pub fn from_request(
        query: &Query,
        if_none_match: Option<&str>,
        prefer: Option<&str>,
    ) -> Result<Option<Self>, ApiError> {
        let after_version = query.field::<NonNegative>("after_version")?;
        let wait_millis = match query.field::<WaitDuration>("wait")? {
            Some(wait) => Some(wait.0),
            None => prefer.and_then(preferred_wait_millis),
        };
        let known = match (after_version, if_none_match) {
            (Some(version), _) => Known::UpTo(version.get()),
            (None, Some(tags)) => Known::Tags(entity_tag_versions(tags)),
            (None, None) => return Ok(None),
        };
        Ok(Some(Self {
            known,
            wait_millis: wait_millis.unwrap_or(0),
        }))
    }

    /// Whether an object at `version` is still the one the client has.
    pub fn unchanged(&self, version: i64) -> bool {
        match &self.known {
            Known::UpTo(known) => version <= *known,
            Known::Tags(None) => true,
            Known::Tags(Some(tags)) => tags.contains(&version),
        }
    }
}

/// `wait=30` or `wait=30s`: whole seconds, at most [`MAX_WAIT_SECONDS`].
struct WaitDuration(u64);

impl std::str::FromStr for WaitDuration {
    type Err = crate::validation::InvalidValue;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let seconds: WaitSeconds = raw.strip_suffix('s').unwrap_or(raw).parse()?;
        Ok(Self(seconds.get() as u64 * 1000))
    }
}

/// RFC 7240's `wait` preference, capped at [`MAX_WAIT_SECONDS`]: a preference the server may
/// shorten, so an unreadable or longer one is not an error.
fn preferred_wait_millis(prefer: &str) -> Option<u64> {
    prefer
        .split([',', ';'])
        .filter_map(|preference| preference.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("wait"))
        .and_then(|(_, value)| value.trim().trim_matches('"').parse::<u64>().ok())
        .map(|seconds| seconds.min(MAX_WAIT_SECONDS as u64) * 1000)
}

/// The versions an `If-None-Match` names (`None` for `*`). Weak tags count: RFC 9110 compares
/// `If-None-Match` weakly. A tag that is no version of ours matches nothing.
fn entity_tag_versions(header: &str) -> Option<Vec<i64>> {
    let tags = header.split(',').map(str::trim);
    if tags.clone().any(|tag| tag == "*") {
        return None;
    }
    Some(
        tags.filter_map(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
        })
        .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{NewEvent, Subject, SubjectKind};
    use serde_json::json;

    fn event(seq: i64, event_type: EventType, subject: &str) -> Envelope {
        event_in("ws", seq, event_type, subject)
    }

    fn event_in(workspace: &str, seq: i64, event_type: EventType, subject: &str) -> Envelope {
        let event = NewEvent {
            event_type,
            workspace_id: WorkspaceId::parse(workspace).unwrap(),
            subject: Subject {
                kind: SubjectKind::Job,
                id: subject.into(),
            },
            actor: "bot".into(),
            data: json!({"to": "RUNNING"}),
        };
        Envelope::new(format!("id-{seq}"), seq, 0, event)
    }

    #[test]
    fn the_header_of_a_reconnect_wins_over_the_query_it_started_with() {
        let start = |header, query| resume(header, &Query::parse(query));
        assert_eq!(start(None, "").unwrap(), Resume::After(0));
        assert_eq!(start(None, "after_seq=5").unwrap(), Resume::After(5));
        assert_eq!(start(None, "tail=50").unwrap(), Resume::Tail(50));
        assert_eq!(start(Some("12"), "after_seq=5").unwrap(), Resume::After(12));
        assert_eq!(start(Some("12"), "tail=50").unwrap(), Resume::After(12));
        for bad in ["-1", "x", ""] {
            assert_eq!(start(Some(bad), "").unwrap_err().status(), 422, "{bad:?}");
        }
        for bad in ["after_seq=x", "tail=0", "tail=501", "tail=9&after_seq=1"] {
            assert_eq!(start(None, bad).unwrap_err().status(), 422, "{bad}");
        }
    }

    #[test]
    fn a_batch_rings_each_workspace_once_with_its_last_seq() {
        let batch = [
            event_in("a", 7, EventType::JobSubmitted, "j_1"),
            event_in("b", 8, EventType::JobSubmitted, "j_2"),
            event_in("a", 9, EventType::JobStateChanged, "j_1"),
        ];
        let rings: Vec<(&str, i64)> = doorbells(&batch)
            .into_iter()
            .map(|(workspace, seq)| (workspace.as_str(), seq))
            .collect();
        assert_eq!(rings, [("a", 9), ("b", 8)]);
        assert!(doorbells(&[]).is_empty());
    }

    #[test]
    fn filters_by_type_and_subject() {
        let submitted = event(1, EventType::JobSubmitted, "j_1");
        let changed = event(2, EventType::JobStateChanged, "j_2");
        let all = StreamFilter::from_query(&Query::default()).unwrap();
        assert!(all.matches(&submitted) && all.matches(&changed));
        let types = StreamFilter::from_query(&Query::parse(
            "types=job.state.changed,%20worker.registered",
        ))
        .unwrap();
        assert!(!types.matches(&submitted) && types.matches(&changed));
        let subject = StreamFilter::from_query(&Query::parse("subject=j_1")).unwrap();
        assert!(subject.matches(&submitted) && !subject.matches(&changed));
        let both =
            StreamFilter::from_query(&Query::parse("subject=j_1&types=job.state.changed")).unwrap();
        assert!(!both.matches(&submitted) && !both.matches(&changed));
        for bad in ["types=job.done", "types=", "subject="] {
            let error = StreamFilter::from_query(&Query::parse(bad)).unwrap_err();
            assert_eq!(error.status(), 422, "{bad}");
        }
    }

    #[test]
    fn an_event_frame_is_id_type_and_the_envelope_on_one_data_line() {
        let mut frame = String::new();
        push_event_frame(&mut frame, &event(7, EventType::JobSubmitted, "j_1"));
        let lines: Vec<&str> = frame.split('\n').collect();
        assert_eq!(lines[0], "id: 7");
        assert_eq!(lines[1], "event: job.submitted");
        let data: serde_json::Value =
            serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["seq"], 7);
        assert_eq!(data["subject"]["id"], "j_1");
        assert_eq!(&lines[3..], ["", ""]);
        assert_eq!(retry_frame(1500), "retry: 1500\n\n");
        assert!(KEEP_ALIVE_FRAME.starts_with(':') && KEEP_ALIVE_FRAME.ends_with("\n\n"));
    }

    fn waiting(query: &str, if_none_match: Option<&str>, prefer: Option<&str>) -> WaitingRead {
        WaitingRead::from_request(&Query::parse(query), if_none_match, prefer)
            .unwrap()
            .expect("a waiting read")
    }

    #[test]
    fn a_wait_is_for_a_version_to_pass() {
        let read = waiting("wait=30&after_version=3", None, None);
        assert_eq!(read.wait_millis, 30_000);
        assert!(read.unchanged(2) && read.unchanged(3) && !read.unchanged(4));
        assert_eq!(
            waiting("wait=5s&after_version=0", None, None).wait_millis,
            5000
        );
        // A conditional read without a wait answers at once.
        assert_eq!(waiting("after_version=3", None, None).wait_millis, 0);
        assert_eq!(
            WaitingRead::from_request(&Query::default(), None, None).unwrap(),
            None
        );
    }

    #[test]
    fn http_can_say_the_same_with_prefer_and_if_none_match() {
        let read = waiting("", Some("\"3\""), Some("wait=20"));
        assert_eq!(read.wait_millis, 20_000);
        assert!(read.unchanged(3) && !read.unchanged(4) && !read.unchanged(2));
        let weak_list = waiting("", Some("W/\"3\", \"5\""), None);
        assert!(weak_list.unchanged(3) && weak_list.unchanged(5) && !weak_list.unchanged(4));
        assert!(waiting("", Some("*"), None).unchanged(99));
        assert!(!waiting("", Some("\"x\""), None).unchanged(1));
        // A preference is capped, not refused; the query wins over it.
        assert_eq!(
            waiting("", Some("\"1\""), Some("respond-async, wait=600")).wait_millis,
            60_000
        );
        assert_eq!(waiting("", Some("\"1\""), Some("wait=soon")).wait_millis, 0);
        assert_eq!(
            waiting("wait=2&after_version=1", None, Some("wait=9")).wait_millis,
            2000
        );
        // after_version wins over If-None-Match.
        assert!(!waiting("after_version=3", Some("\"4\""), None).unchanged(4));
    }

    #[test]
    fn a_bad_wait_is_refused() {
        for query in [
            "wait=61&after_version=1",
            "wait=-1&after_version=1",
            "wait=x&after_version=1",
            "wait=x",
            "after_version=-2",
        ] {
            let error = WaitingRead::from_request(&Query::parse(query), None, None).unwrap_err();
            assert_eq!(error.status(), 422, "{query}");
        }
    }

    #[test]
    fn a_wait_without_a_known_version_is_a_plain_read() {
        let read = |query, prefer| WaitingRead::from_request(&Query::parse(query), None, prefer);
        assert_eq!(read("wait=10", None), Ok(None));
        assert_eq!(read("", Some("wait=10")), Ok(None));
    }
}

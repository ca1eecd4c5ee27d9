//! Identifiers of workers, jobs and workspaces.
//!
//! One generic [`Id`] parameterised by a marker type, so a `JobId` can never be passed where a `WorkerId`
//! is expected while the shape rule (contract §1) lives in exactly one place. An `Id` can only be built by
//! parsing or generating, so holding one proves the shape is valid — including after deserialising.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ApiError;
use crate::hex::lower_hex;
use crate::validation::InvalidValue;

/// Longest id the contract allows.
pub const MAX_ID_LEN: usize = 64;

/// What an id identifies; the noun appears in messages ("Worker w_1 not found").
pub trait IdKind {
    const NOUN: &'static str;
}

/// Kinds whose ids the service generates: `prefix` + 12 lowercase hex digits.
pub trait GeneratedIdKind: IdKind {
    const PREFIX: &'static str;
}

/// Marker for worker ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Worker {}
/// Marker for job ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {}
/// Marker for allocation ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Allocation {}
/// Marker for workspace ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workspace {}

impl IdKind for Worker {
    const NOUN: &'static str = "Worker";
}
impl GeneratedIdKind for Worker {
    const PREFIX: &'static str = "w_";
}
impl IdKind for Job {
    const NOUN: &'static str = "Job";
}
impl GeneratedIdKind for Job {
    const PREFIX: &'static str = "j_";
}
impl IdKind for Allocation {
    const NOUN: &'static str = "Allocation";
}
impl GeneratedIdKind for Allocation {
    const PREFIX: &'static str = "a_";
}
impl IdKind for Workspace {
    const NOUN: &'static str = "Workspace";
}

pub type WorkerId = Id<Worker>;
pub type JobId = Id<Job>;
pub type AllocationId = Id<Allocation>;
pub type WorkspaceId = Id<Workspace>;

/// A valid id of kind `K`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id<K> {
    value: String,
    kind: PhantomData<fn() -> K>,
}

/// The contract's id shape `[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}`, for callers that only need a yes/no.
pub fn is_valid_id(candidate: &str) -> bool {
    let mut chars = candidate.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok
        && candidate.len() <= MAX_ID_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

impl<K: IdKind> Id<K> {
    pub fn parse(candidate: &str) -> Result<Self, InvalidValue> {
        if is_valid_id(candidate) {
            Ok(Self::new_unchecked(candidate.to_owned()))
        } else {
            Err(InvalidValue::new(
                "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-', starting with a letter or digit",
            ))
        }
    }

    /// Parses an id taken from a URL path. A malformed id cannot name anything, so it is a 404
    /// (contract §1), with the same message as a well-formed id that does not exist.
    pub fn from_path(segment: &str) -> Result<Self, ApiError> {
        Self::parse(segment).map_err(|_| not_found::<K>(segment))
    }

    /// The 404 for this id: used both when it does not exist and when it lives in another workspace.
    pub fn not_found(&self) -> ApiError {
        not_found::<K>(&self.value)
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn into_string(self) -> String {
        self.value
    }

    fn new_unchecked(value: String) -> Self {
        Self {
            value,
            kind: PhantomData,
        }
    }
}

impl WorkspaceId {
    /// Where an operator token's creations go when the request names no workspace (contract §2), as
    /// Kubernetes defaults a namespace.
    pub fn default_workspace() -> Self {
        Self::new_unchecked("default".to_owned())
    }
}

impl<K: GeneratedIdKind> Id<K> {
    /// A fresh id from six random bytes the caller draws (this crate has no randomness of its own).
    pub fn generate(random: [u8; 6]) -> Self {
        Self::new_unchecked(format!("{}{}", K::PREFIX, lower_hex(&random)))
    }
}

fn not_found<K: IdKind>(id: &str) -> ApiError {
    ApiError::NotFound(format!("{} {id} not found", K::NOUN))
}

impl<K> AsRef<str> for Id<K> {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<K> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_shape() {
        let longest = "a".repeat(64);
        for valid in ["w_1", "0", "j_0123456789ab", "A.b:c-d_e", longest.as_str()] {
            assert!(WorkerId::parse(valid).is_ok(), "{valid}");
        }
    }

    #[test]
    fn rejects_other_shapes() {
        let too_long = "a".repeat(65);
        for invalid in [
            "",
            "_w",
            "-1",
            ".a",
            "a b",
            "a/b",
            "a%2F",
            "é",
            "a\n",
            too_long.as_str(),
        ] {
            assert!(JobId::parse(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn generated_ids_have_prefix_and_hex() {
        let random = [0x00, 0x1f, 0xab, 0xcd, 0xef, 0x99];
        assert_eq!(WorkerId::generate(random).as_str(), "w_001fabcdef99");
        assert_eq!(JobId::generate(random).as_str(), "j_001fabcdef99");
        assert_eq!(AllocationId::generate(random).as_str(), "a_001fabcdef99");
    }

    #[test]
    fn path_ids_of_another_shape_are_404() {
        let error = WorkerId::from_path("no such!").unwrap_err();
        assert_eq!(error.status(), 404);
        assert_eq!(error.message(), "Worker no such! not found");
        assert_eq!(
            JobId::parse("j_1").unwrap().not_found().message(),
            "Job j_1 not found"
        );
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let id: WorkspaceId = serde_json::from_str("\"team-a\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"team-a\"");
        assert_eq!(id.into_string(), "team-a");
        assert!(serde_json::from_str::<WorkspaceId>("\"bad id\"").is_err());
        assert!(serde_json::from_str::<WorkspaceId>("7").is_err());
    }
}

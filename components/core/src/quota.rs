//! Worker quotas per depth and the allocation arithmetic (contract §6, Resources).
//!
//! The numbers here are pure; "never over-grant" across racing requests is the database's job (the
//! caller reads `allocated` under a lock or in a serialisable transaction and passes it in).

use std::str::FromStr;

use serde::Serialize;

use crate::error::{ApiError, ConfigError};
use crate::ids::{AllocationId, JobId};
use crate::validation::{Depth, WorkerCount};

/// Maximum workers at depths 0–5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas([i64; 6]);

impl Quotas {
    /// Parses the `depth_quotas` variable: exactly six comma-separated non-negative integers, e.g.
    /// `"10,8,5,3,2,1"`. Zero is allowed and closes a depth.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let values: Vec<&str> = raw.split(',').map(str::trim).collect();
        let mut quotas = [0; 6];
        if values.len() != quotas.len() {
            return Err(ConfigError(format!(
                "depth_quotas must be 6 comma-separated integers (depths 0-5), got {} value(s) in {raw:?}",
                values.len()
            )));
        }
        for (depth, (slot, value)) in quotas.iter_mut().zip(values).enumerate() {
            *slot = value.parse::<u32>().map(i64::from).map_err(|_| {
                ConfigError(format!(
                    "depth_quotas value for depth {depth} must be a non-negative integer, got {value:?}"
                ))
            })?;
        }
        Ok(Self(quotas))
    }

    pub fn max_workers(&self, depth: Depth) -> i64 {
        self.0[depth.index()]
    }

    /// `[{depth, max_workers}]` for depths 0–5, the body of `GET /api/resources/quotas`.
    pub fn rows(&self) -> Vec<Quota> {
        Depth::all()
            .map(|depth| Quota {
                depth,
                max_workers: self.max_workers(depth),
            })
            .collect()
    }
}

/// 10, 8, 5, 3, 2, 1: the original service's pool.
impl Default for Quotas {
    fn default() -> Self {
        Self([10, 8, 5, 3, 2, 1])
    }
}

impl FromStr for Quotas {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub depth: Depth,
    pub max_workers: i64,
}

/// How many of `requested` workers to grant when `allocated` of `max` are taken: as many as are left, up
/// to the request (*compat*: a partial grant is a success). Nothing left is 409 `QUOTA_EXCEEDED`.
pub fn grant(
    depth: Depth,
    requested: WorkerCount,
    max: i64,
    allocated: i64,
) -> Result<i64, ApiError> {
    let available = available(max, allocated);
    if available == 0 {
        return Err(ApiError::QuotaExceeded {
            depth,
            requested: requested.get(),
            available,
        });
    }
    Ok(requested.get().min(available))
}

/// Never negative, even if the quota was lowered below what is already allocated.
fn available(max: i64, allocated: i64) -> i64 {
    (max - allocated).max(0)
}

/// How many rows a depth's quota is spread over (migrations/0010). A job draws from the stripe its id
/// hashes to, so allocations for different jobs at one depth rarely wait on the same row.
pub const STRIPES: usize = 16;

/// A depth's quota as its [`STRIPES`] rows hold it, after a step that holds all of them.
///
/// A grant its job's own stripe can cover, while the rows are laid out for the configured limit,
/// takes from that stripe alone; that is exact, since the depth has at least what one stripe has
/// free. Any other grant locks every stripe, decides on the whole depth ([`grant_across`]) and lays
/// the depth out anew for the limit it was decided under. Only such a step changes a capacity, so
/// the capacities always add up to the limit the rows are laid out for, and a changed limit acts on
/// the first grant that meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Each stripe's share of the limit; never below what it holds.
    pub capacity: [i64; STRIPES],
    /// What each stripe's open allocations hold.
    pub allocated: [i64; STRIPES],
}

impl Layout {
    /// Spreads `max` over stripes that hold `allocated`, at most `max` in all: each keeps what it
    /// holds plus an even share of what is free (the remainder to the first stripes), so most small
    /// grants find room in their own stripe.
    fn spread(max: i64, allocated: [i64; STRIPES]) -> Self {
        let free = available(max, allocated.iter().sum());
        let stripes = STRIPES as i64;
        let mut capacity = allocated;
        for (stripe, capacity) in (0..).zip(&mut capacity) {
            *capacity += free / stripes + i64::from(stripe < free % stripes);
        }
        Self {
            capacity,
            allocated,
        }
    }
}

/// A grant decided with every stripe of the depth locked, whose `allocated` are given, for a job
/// whose own stripe is `home`: exactly what [`grant`] gives for the depth's total, taken into the
/// home stripe, and the depth laid out anew for `max` around it (a refusal changes nothing, so
/// the rows never hold more than the limit they are laid out for).
pub fn grant_across(
    depth: Depth,
    requested: WorkerCount,
    max: i64,
    mut allocated: [i64; STRIPES],
    home: usize,
) -> Result<(i64, Layout), ApiError> {
    let granted = grant(depth, requested, max, allocated.iter().sum())?;
    *allocated
        .get_mut(home)
        .ok_or_else(|| ApiError::Internal(format!("stripe {home} of {STRIPES}")))? += granted;
    Ok((granted, Layout::spread(max, allocated)))
}

/// One row of `GET /api/resources/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub depth: Depth,
    pub max_workers: i64,
    pub allocated: i64,
    pub available: i64,
}

impl Usage {
    pub fn new(depth: Depth, max_workers: i64, allocated: i64) -> Self {
        Self {
            depth,
            max_workers,
            allocated,
            available: available(max_workers, allocated),
        }
    }
}

/// The 201 body of `POST /api/resources/allocate`, and the data of `resources.allocated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub job_id: JobId,
    pub depth: Depth,
    pub requested: WorkerCount,
    pub granted: i64,
    pub allocation_id: AllocationId,
}

/// The 200 body of `POST /api/resources/release`, and the data of `resources.released`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub job_id: JobId,
    pub depth: Depth,
    pub released: bool,
    pub released_workers: i64,
}

impl Release {
    /// `released` is false when the job held nothing at that depth (still a 200).
    pub fn new(job_id: JobId, depth: Depth, released_workers: i64) -> Self {
        Self {
            job_id,
            depth,
            released: released_workers > 0,
            released_workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn depth(n: i64) -> Depth {
        Depth::new(n).unwrap()
    }

    fn count(n: i64) -> WorkerCount {
        WorkerCount::new(n).unwrap()
    }

    #[test]
    fn parses_six_non_negative_integers() {
        assert_eq!(Quotas::parse("10,8,5,3,2,1").unwrap(), Quotas::default());
        assert_eq!(
            Quotas::parse(" 1, 0 ,2,3,4,5")
                .unwrap()
                .max_workers(depth(1)),
            0
        );
        for bad in [
            "",
            "1,2,3,4,5",
            "1,2,3,4,5,6,7",
            "1,2,x,4,5,6",
            "1,2,-3,4,5,6",
            "1,,3,4,5,6",
        ] {
            assert!(Quotas::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            "1,2,3,4,5,0".parse::<Quotas>(),
            Quotas::parse("1,2,3,4,5,0")
        );
        assert!("1,2,3".parse::<Quotas>().is_err());
        assert_eq!(
            Quotas::parse("1,2,x,4,5,6").unwrap_err().to_string(),
            "configuration error: depth_quotas value for depth 2 must be a non-negative integer, got \"x\""
        );
        assert_eq!(
            json!(Quotas::default().rows()[5]),
            json!({"depth": 5, "max_workers": 1})
        );
    }

    #[test]
    fn grants_what_is_left_up_to_the_request() {
        assert_eq!(grant(depth(0), count(3), 10, 0), Ok(3));
        assert_eq!(grant(depth(0), count(3), 10, 8), Ok(2));
        assert_eq!(grant(depth(0), count(2), 10, 8), Ok(2));
        assert_eq!(
            grant(depth(2), count(4), 5, 5),
            Err(ApiError::QuotaExceeded {
                depth: depth(2),
                requested: 4,
                available: 0
            })
        );
        // A lowered quota: more allocated than allowed.
        assert!(grant(depth(0), count(1), 3, 7).is_err());
        assert!(grant(depth(5), count(1), 0, 0).is_err());
    }

    #[test]
    fn usage_and_release_shapes() {
        assert_eq!(
            json!(Usage::new(depth(1), 8, 10)),
            json!({"depth": 1, "max_workers": 8, "allocated": 10, "available": 0})
        );
        let release = Release::new(JobId::parse("j_1").unwrap(), depth(0), 0);
        assert_eq!(
            json!(release),
            json!({"job_id": "j_1", "depth": 0, "released": false, "released_workers": 0})
        );
        assert!(Release::new(JobId::parse("j_1").unwrap(), depth(0), 3).released);
    }
}

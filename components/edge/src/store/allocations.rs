//! `allocations`: one row per grant; a release closes a job's open rows at one depth.

//! `job_transitions`: the audit trail of job state changes.

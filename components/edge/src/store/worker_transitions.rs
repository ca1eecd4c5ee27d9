//! `worker_transitions`: the audit trail of worker state changes.

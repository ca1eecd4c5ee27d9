-- POST /api/supervisor/workers/{id}/pause or /resume with an Idempotency-Key (supervisor::lifecycle::act through
-- edge::write_if_unchanged): the same statements, with pgbench variables for their parameters. Each client takes
-- its own slice of the seeded workers round-robin and moves each to the other state. Redis round trips are not in
-- here. No transaction: the worker is read as it is, and the last statement writes the move only onto the
-- version read.
\set sent :sent + 1
\set slice :pool / :clients
\set k :client_id * :slice + (:sent % :slice) + 1
SELECT id, workspace_id, status AS current, metadata, (extract(epoch from created_at) * 1000)::int8,
       (extract(epoch from updated_at) * 1000)::int8, version, (extract(epoch from last_heartbeat_at) * 1000)::int8,
       (extract(epoch from clock_timestamp()) * 1000000)::int8 AS read_at,
       CASE status WHEN 'RUNNING' THEN 'PAUSED' ELSE 'RUNNING' END AS target,
       'worker.state.changed' AS event_types, 'worker' AS event_kinds, id AS event_subjects,
       jsonb_build_object('from', status, 'to', CASE status WHEN 'RUNNING' THEN 'PAUSED' ELSE 'RUNNING' END,
                          'reason', NULL)::text AS event_data,
       ARRAY[id]::text AS wm_subjects, ARRAY[status]::text AS wm_from,
       ARRAY[CASE status WHEN 'RUNNING' THEN 'PAUSED' ELSE 'RUNNING' END]::text AS wm_to,
       '{}' AS jm_subjects, '{}' AS jm_from, '{}' AS jm_to
FROM workers WHERE id = 'cycle-' || :pool_run || '-' || :k \gset
\set status 200
\set body_bytes 300
-- The move is written by the write's one statement (store::workers::Change), stamped with the time read with the
-- worker, and only onto the version read (settle_check fails the statement otherwise).
WITH worker_change AS (
    UPDATE workers SET status = :target, version = version + 1,
                       updated_at = 'epoch'::timestamptz + :read_at::int8 * interval '1 microsecond'
    WHERE id = 'cycle-' || :pool_run || '-' || :k AND version = :version
    RETURNING 1),
\include write/settle_parts
SELECT settle_check(EXISTS (SELECT 1 FROM record), EXISTS (SELECT 1 FROM worker_change)),
       ARRAY(SELECT pos FROM inserted_events ORDER BY pos)::text AS own
\gset
\include write/publish

-- POST /api/resources/allocate (one worker) or /release with an Idempotency-Key (resources::allocations through
-- edge::write): the same statements, with pgbench variables for their parameters. Each client takes its own slice
-- of the seeded jobs round-robin, allocating on one pass and releasing on the next. Redis round trips are not in
-- here.
\set slice :pool / :clients
\set k :client_id * :slice + (:sent % :slice) + 1
\set phase (:sent / :slice) % 2
\set depth :k % 6
\include write/begin
SELECT id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers AS held,
       (extract(epoch from created_at) * 1000)::int8, (extract(epoch from updated_at) * 1000)::int8,
       (extract(epoch from started_at) * 1000)::int8, (extract(epoch from completed_at) * 1000)::int8,
       version, result, error,
       CASE WHEN :phase = 1 AND allocated_workers = 0 THEN ''
            WHEN :phase = 1 THEN 'resources.released'
            WHEN status = 'PENDING' THEN 'job.state.changed|resources.allocated'
            ELSE 'resources.allocated' END AS event_types,
       CASE WHEN :phase = 1 THEN 'job' WHEN status = 'PENDING' THEN 'job|allocation' ELSE 'allocation' END
           AS event_kinds,
       CASE WHEN :phase = 0 AND status = 'PENDING' THEN id || '|' || id ELSE id END AS event_subjects,
       CASE WHEN :phase = 1 THEN jsonb_build_object('job_id', id, 'depth', depth, 'released', true)::text
            ELSE CASE WHEN status = 'PENDING' THEN '{"from": "PENDING", "to": "RUNNING", "reason": null}|' ELSE ''
                 END || jsonb_build_object('job_id', id, 'depth', depth, 'requested', 1, 'granted', 1)::text
       END AS event_data,
       CASE WHEN :phase = 0 AND status = 'PENDING' THEN ARRAY[id]::text ELSE '{}' END AS jm_subjects,
       CASE WHEN :phase = 0 AND status = 'PENDING' THEN '{PENDING}' ELSE '{}' END AS jm_from,
       CASE WHEN :phase = 0 AND status = 'PENDING' THEN '{RUNNING}' ELSE '{}' END AS jm_to,
       '{}' AS wm_subjects, '{}' AS wm_from, '{}' AS wm_to
FROM jobs WHERE id = 'alloc-' || :pool_run || '-' || :k FOR UPDATE \gset
\set status 200
\set body_bytes 200
\if :phase = 0
-- The seeded quotas are so large that the job's own stripe always has room (store::quotas::take_from_own_stripe).
SELECT quota_take(:id, :depth, 1000000000, 1);
\set status 201
-- The ledger row and the holdings are deferred to the statement that ends the transaction
-- (store::allocations::Grant).
WITH ledger AS (
    INSERT INTO allocations (id, job_id, workspace_id, depth, workers)
    VALUES ('pa-' || :keys || '-' || :client_id || '-' || :sent, :id, :workspace_id, :depth::int8, 1::int8)),
holdings AS (
    UPDATE jobs SET allocated_workers = allocated_workers + 1::int8, status = 'RUNNING',
        started_at = coalesce(started_at, clock_timestamp()), version = version + 1, updated_at = clock_timestamp()
    WHERE id = :id),
\include write/settle_parts
\include write/settle_result
\include write/commit
\elif :held > 0
-- One holder: its allocations are all in its stripe, which the statement locks (store::allocations::release).
WITH closed AS (
    UPDATE allocations SET released_at = clock_timestamp()
    WHERE job_id = ANY(ARRAY[:id]) AND released_at IS NULL
    RETURNING job_id, depth, stripe, workers),
given_back AS (
    UPDATE quota_stripes s SET allocated = s.allocated - freed.workers
    FROM (SELECT depth, stripe, sum(workers) AS workers FROM closed GROUP BY depth, stripe) freed
    WHERE s.depth = freed.depth AND s.stripe = freed.stripe)
SELECT job_id, depth::int8, sum(workers)::int8 FROM closed GROUP BY job_id, depth ORDER BY job_id;
-- The job's holdings are deferred to the statement that ends the transaction (store::jobs::RemoveWorkers).
WITH holdings AS (
    UPDATE jobs SET allocated_workers = allocated_workers - :held::int8, version = version + 1,
        updated_at = clock_timestamp()
    WHERE id = :id),
\include write/settle_parts
\include write/settle_result
\include write/commit
\else
\include write/settle
COMMIT;
\endif

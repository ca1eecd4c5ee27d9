-- POST /api/resources/allocate (one worker) or /release with an Idempotency-Key (resources::allocations through
-- edge::write): the same statements, with pgbench variables for their parameters. Each client takes its own slice
-- of the seeded jobs round-robin, allocating on one pass and releasing on the next. The Redis round trips are not
-- in here.
\set slice :pool / :clients
\set k :client_id * :slice + (:sent % :slice) + 1
\set phase (:sent / :slice) % 2
\set depth :k % 6
\set sent :sent + 1
BEGIN;
INSERT INTO idempotency_records (scope_key, fingerprint, expires_at)
VALUES (:keys || '-' || :client_id || '-' || :sent, 'bench-fingerprint', now() + 86400::int8 * interval '1 second')
ON CONFLICT (scope_key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, status = NULL, body = NULL, response_headers = NULL,
        created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE idempotency_records.expires_at <= now()
RETURNING 1;
SAVEPOINT change;
SELECT id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers AS held,
       (extract(epoch from created_at) * 1000)::int8, (extract(epoch from updated_at) * 1000)::int8,
       (extract(epoch from started_at) * 1000)::int8, (extract(epoch from completed_at) * 1000)::int8,
       version, result, error, (status = 'PENDING')::int AS starting
FROM jobs WHERE id = 'alloc-' || :pool_run || '-' || :k FOR UPDATE \gset
\if :phase = 0
SELECT allocated::int8 FROM quotas WHERE depth = ANY(ARRAY[:depth]::int8[]) ORDER BY depth FOR UPDATE;
INSERT INTO allocations (id, job_id, workspace_id, depth, workers)
VALUES ('pa-' || :keys || '-' || :client_id || '-' || :sent, 'alloc-' || :pool_run || '-' || :k, 'bench',
        :depth::int8, 1::int8);
UPDATE quotas SET allocated = allocated + 1::int8, max_workers = GREATEST(1000000000::int8, allocated + 1::int8)
WHERE depth = :depth::int8;
UPDATE jobs SET allocated_workers = allocated_workers + 1::int8, status = 'RUNNING',
    started_at = coalesce(started_at, clock_timestamp()), version = version + 1, updated_at = clock_timestamp()
WHERE id = 'alloc-' || :pool_run || '-' || :k;
\if :starting
INSERT INTO job_transitions (job_id, from_state, to_state, reason, actor, at)
SELECT s, f, t, r, a, clock_timestamp()
FROM unnest(ARRAY['alloc-' || :pool_run || '-' || :k], ARRAY['PENDING'], ARRAY['RUNNING'], ARRAY[NULL]::text[],
            ARRAY['bench']) WITH ORDINALITY AS e(s, f, t, r, a, n) ORDER BY n;
\endif
WITH inserted AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data, publishing_since)
    SELECT t, w, k, i, a, d::jsonb, CASE WHEN true THEN clock_timestamp() END
    FROM unnest(ARRAY['resources.allocated'], ARRAY['bench'], ARRAY['allocation'],
                ARRAY['pa-' || :keys || '-' || :client_id || '-' || :sent], ARRAY['bench'],
                ARRAY['{"job_id": "alloc","depth": ' || :depth || ',"requested": 1,"granted": 1}'])
         WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n
    RETURNING seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind,
              subject_id, actor, data)
SELECT min(seq) AS first_seq, max(seq) AS last_seq,
       EXISTS (SELECT 1 FROM events WHERE published_at IS NULL AND publishing_since IS NULL)
FROM inserted \gset
\elif :held > 0
SELECT allocated::int8 FROM quotas WHERE depth = ANY(ARRAY[:depth]::int8[]) ORDER BY depth FOR UPDATE;
WITH closed AS (
    UPDATE allocations SET released_at = clock_timestamp()
    WHERE job_id = ANY(ARRAY['alloc-' || :pool_run || '-' || :k]) AND released_at IS NULL
    RETURNING job_id, workers)
SELECT job_id, sum(workers)::int8 FROM closed GROUP BY job_id ORDER BY job_id;
UPDATE quotas q SET allocated = q.allocated - f.workers
FROM unnest(ARRAY[:depth]::int8[], ARRAY[:held]::int8[]) AS f(depth, workers) WHERE q.depth = f.depth;
UPDATE jobs SET allocated_workers = allocated_workers - :held::int8, version = version + 1,
    updated_at = clock_timestamp()
WHERE id = 'alloc-' || :pool_run || '-' || :k;
WITH inserted AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data, publishing_since)
    SELECT t, w, k, i, a, d::jsonb, CASE WHEN true THEN clock_timestamp() END
    FROM unnest(ARRAY['resources.released'], ARRAY['bench'], ARRAY['job'],
                ARRAY['alloc-' || :pool_run || '-' || :k], ARRAY['bench'],
                ARRAY['{"job_id": "alloc","depth": ' || :depth || ',"released": true}'])
         WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n
    RETURNING seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind,
              subject_id, actor, data)
SELECT min(seq) AS first_seq, max(seq) AS last_seq,
       EXISTS (SELECT 1 FROM events WHERE published_at IS NULL AND publishing_since IS NULL)
FROM inserted \gset
\else
\set first_seq 0
\set last_seq 0
\endif
UPDATE idempotency_records
SET status = 200, body = convert_to(repeat('x', 200), 'UTF8'), response_headers = '{}'
WHERE scope_key = :keys || '-' || :client_id || '-' || :sent;
COMMIT;
\if :last_seq > 0
WITH marked AS (UPDATE events SET published_at = clock_timestamp() WHERE seq = ANY(ARRAY[:first_seq, :last_seq]::int8[]) AND published_at IS NULL)
SELECT EXISTS (SELECT 1 FROM events
               WHERE published_at IS NULL AND publishing_since < now() - interval '30 seconds');
\endif

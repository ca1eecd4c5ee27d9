-- POST /api/jobs/submit with an Idempotency-Key (jobs::submit through edge::write): the same statements, with
-- pgbench variables for their parameters (the two events' seqs come back
-- as their first and last). The Redis round trips are not in here.
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
INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id)
VALUES ('pg-' || :keys || '-' || :client_id || '-' || :sent, 'bench', 'PENDING', 'benchmark job', 1::int8, 0::int8,
        NULL)
ON CONFLICT (id) DO NOTHING
RETURNING id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers,
          (extract(epoch from created_at) * 1000)::int8, (extract(epoch from updated_at) * 1000)::int8,
          (extract(epoch from started_at) * 1000)::int8, (extract(epoch from completed_at) * 1000)::int8,
          version, result, error;
INSERT INTO job_transitions (job_id, from_state, to_state, reason, actor, at)
SELECT s, f, t, r, a, clock_timestamp()
FROM unnest(ARRAY['pg-' || :keys || '-' || :client_id || '-' || :sent,
                  'pg-' || :keys || '-' || :client_id || '-' || :sent],
            ARRAY[NULL, 'SUBMITTED'], ARRAY['SUBMITTED', 'PENDING'], ARRAY[NULL, NULL]::text[],
            ARRAY['bench', 'bench']) WITH ORDINALITY AS e(s, f, t, r, a, n) ORDER BY n;
WITH inserted AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data, publishing_since)
    SELECT t, w, k, i, a, d::jsonb, CASE WHEN true THEN clock_timestamp() END
    FROM unnest(ARRAY['job.submitted', 'job.state.changed'], ARRAY['bench', 'bench'], ARRAY['job', 'job'],
                ARRAY['pg-' || :keys || '-' || :client_id || '-' || :sent,
                      'pg-' || :keys || '-' || :client_id || '-' || :sent],
                ARRAY['bench', 'bench'],
                ARRAY['{"id": "job","task_description": "benchmark job","worker_count": 1,"depth": 0}',
                      '{"from": "SUBMITTED","to": "PENDING","reason": null}'])
         WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n
    RETURNING seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind,
              subject_id, actor, data)
SELECT min(seq) AS first_seq, max(seq) AS last_seq,
       EXISTS (SELECT 1 FROM events WHERE published_at IS NULL AND publishing_since IS NULL)
FROM inserted \gset
UPDATE idempotency_records
SET status = 201, body = convert_to(repeat('x', 400), 'UTF8'), response_headers = '{"etag": "\"1\""}'
WHERE scope_key = :keys || '-' || :client_id || '-' || :sent;
COMMIT;
WITH marked AS (UPDATE events SET published_at = clock_timestamp()
WHERE seq = ANY(ARRAY[:first_seq, :last_seq]::int8[]) AND published_at IS NULL)
SELECT EXISTS (SELECT 1 FROM events
               WHERE published_at IS NULL AND publishing_since < now() - interval '30 seconds');

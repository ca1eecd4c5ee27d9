-- POST /api/supervisor/workers/{id}/pause or /resume with an Idempotency-Key (supervisor::lifecycle::act through
-- edge::write): the same statements, with pgbench variables for their parameters. Each client takes its own slice
-- of the seeded workers round-robin and moves each to the other state. The Redis round trips are not in here.
\set slice :pool / :clients
\set k :client_id * :slice + (:sent % :slice) + 1
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
SELECT id, workspace_id, status AS current, metadata, (extract(epoch from created_at) * 1000)::int8,
       (extract(epoch from updated_at) * 1000)::int8, version, (extract(epoch from last_heartbeat_at) * 1000)::int8,
       CASE status WHEN 'RUNNING' THEN 'PAUSED' ELSE 'RUNNING' END AS target
FROM workers WHERE id = 'cycle-' || :pool_run || '-' || :k FOR UPDATE \gset
UPDATE workers SET status = :target, version = version + 1, updated_at = clock_timestamp()
WHERE id = 'cycle-' || :pool_run || '-' || :k
RETURNING id, workspace_id, status, metadata, (extract(epoch from created_at) * 1000)::int8,
          (extract(epoch from updated_at) * 1000)::int8, version, (extract(epoch from last_heartbeat_at) * 1000)::int8;
INSERT INTO worker_transitions (worker_id, from_state, to_state, reason, actor, at)
SELECT s, f, t, r, a, clock_timestamp()
FROM unnest(ARRAY['cycle-' || :pool_run || '-' || :k], ARRAY[:current]::text[], ARRAY[:target]::text[],
            ARRAY[NULL]::text[], ARRAY['bench']) WITH ORDINALITY AS e(s, f, t, r, a, n) ORDER BY n;
WITH inserted AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data, publishing_since)
    SELECT t, w, k, i, a, d::jsonb, CASE WHEN true THEN clock_timestamp() END
    FROM unnest(ARRAY['worker.state.changed'], ARRAY['bench'], ARRAY['worker'],
                ARRAY['cycle-' || :pool_run || '-' || :k], ARRAY['bench'],
                ARRAY['{"from": "' || :current || '","to": "' || :target || '","reason": null}'])
         WITH ORDINALITY AS e(t, w, k, i, a, d, n) ORDER BY n
    RETURNING seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind,
              subject_id, actor, data)
SELECT *, EXISTS (SELECT 1 FROM events WHERE published_at IS NULL AND publishing_since IS NULL)
FROM inserted ORDER BY seq \gset event_
UPDATE idempotency_records
SET status = 200, body = convert_to(repeat('x', 300), 'UTF8'), response_headers = '{"etag": "\"3\""}'
WHERE scope_key = :keys || '-' || :client_id || '-' || :sent;
COMMIT;
WITH marked AS (UPDATE events SET published_at = clock_timestamp() WHERE seq = ANY(ARRAY[:event_seq]::int8[]) AND published_at IS NULL)
SELECT EXISTS (SELECT 1 FROM events
               WHERE published_at IS NULL AND publishing_since < now() - interval '30 seconds');

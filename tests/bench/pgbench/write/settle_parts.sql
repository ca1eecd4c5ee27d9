-- The WITH parts store::settle writes for every write (see write/settle), for a statement that begins with
-- `WITH` and the handler's deferred writes, if any, and ends with write/settle_result.
record AS (
    INSERT INTO idempotency_records (scope_key, fingerprint, status, body, response_headers, expires_at)
    VALUES (:keys || '-' || :client_id || '-' || :sent, 'bench-fingerprint', :status,
            convert_to(repeat('x', :body_bytes), 'UTF8'), '{}', now() + 86400::int8 * interval '1 second')
    ON CONFLICT (scope_key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body,
            response_headers = EXCLUDED.response_headers, created_at = now(), expires_at = EXCLUDED.expires_at
        WHERE idempotency_records.expires_at <= now()
    RETURNING 1),
worker_moves AS (
    INSERT INTO worker_transitions (worker_id, from_state, to_state, reason, actor, at)
    SELECT s, f, t, NULL, 'bench', clock_timestamp()
    FROM unnest(:wm_subjects::text[], :wm_from::text[], :wm_to::text[]) WITH ORDINALITY AS e(s, f, t, n)
    ORDER BY n),
job_moves AS (
    INSERT INTO job_transitions (job_id, from_state, to_state, reason, actor, at)
    SELECT s, f, t, NULL, 'bench', clock_timestamp()
    FROM unnest(:jm_subjects::text[], :jm_from::text[], :jm_to::text[]) WITH ORDINALITY AS e(s, f, t, n)
    ORDER BY n),
inserted_events AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data)
    SELECT t, w, k, i, a, d::jsonb
    FROM unnest(string_to_array(:event_types, '|'), ARRAY['bench', 'bench'], string_to_array(:event_kinds, '|'),
                string_to_array(:event_subjects, '|'), ARRAY['bench', 'bench'], string_to_array(:event_data, '|'))
         WITH ORDINALITY AS e(t, w, k, i, a, d, n)
    WHERE t IS NOT NULL ORDER BY n
    RETURNING pos)

-- edge::write, before the change: the transaction, the Idempotency-Key claimed, a savepoint to record a refusal.
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

-- 0008_idempotency_records_written_whole.sql — a keyed request's record is written in one statement, whole.
--
-- Until now a keyed write claimed its key first (a record with no response: status and body NULL), took a
-- savepoint, made its change, then filled the response in; a deferred trigger refused to commit a record left
-- without one. Now the record is inserted, response and all, by the statement that also writes the change's audit
-- rows and events, just before the COMMIT (edge::write, store::settle); a refusal is recorded on its own once the
-- change has rolled back. Of two requests racing on a key, the one whose insert meets the other's record (live,
-- or uncommitted: the insert waits for it) rolls back and replays the other's answer. A record without a response
-- no longer exists even inside a transaction, so the columns say so and the trigger goes.
--
-- How a key is used now:
--   INSERT INTO idempotency_records (scope_key, fingerprint, status, body, response_headers, expires_at)
--   VALUES (…) ON CONFLICT (scope_key) DO UPDATE SET … WHERE idempotency_records.expires_at <= now()
--   RETURNING 1;
--   * a row returned  -> first use (or an expired record reused): COMMIT.
--   * no row returned -> a committed, live record exists: ROLLBACK; SELECT it; same fingerprint -> replay status
--     and body byte for byte; different fingerprint -> 422 IDEMPOTENCY_KEY_REUSED.
LOCK TABLE idempotency_records IN SHARE MODE;

DROP TRIGGER idempotency_record_complete ON idempotency_records;
DROP FUNCTION idempotency_record_complete();

ALTER TABLE idempotency_records
    DROP CONSTRAINT idempotency_body_with_status,
    ALTER COLUMN status SET NOT NULL,
    ALTER COLUMN body SET NOT NULL;

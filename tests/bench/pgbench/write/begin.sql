-- edge::write, before the change: the transaction. The Idempotency-Key is recorded last, with the response
-- (write/settle).
\set sent :sent + 1
BEGIN;

-- 0003_publishing_claims.sql — lets the writer of an event publish it without a second transaction.
--
-- A request that can reach Redis inserts its events with publishing_since set (its claim), publishes them after
-- the commit and marks them published in one statement. Other publishers leave a claimed event alone for 30
-- seconds, so it goes out once; after that (its publisher died) it is drained like one written while Redis was
-- out. A publisher that fails to publish sets the claim back to NULL. events_guard already lets this column
-- change: it protects only the event's content.
--
-- Only unpublished events are indexed, in two small partial indexes: those nobody claimed (a write checks for them
-- before publishing its own, so they go out oldest first), and claimed ones by claim time (checked after
-- publishing, for claims over 30 s old). An event published by its writer never enters the first, so the check
-- every write makes stays free of the dead entries that marking events leaves behind; the outbox is vacuumed
-- often so the second stays small too.
ALTER TABLE events ADD COLUMN publishing_since timestamptz NULL;
DROP INDEX events_unpublished_idx;
CREATE INDEX events_unclaimed_idx ON events (seq) WHERE published_at IS NULL AND publishing_since IS NULL;
CREATE INDEX events_claimed_idx ON events (publishing_since) WHERE published_at IS NULL AND publishing_since IS NOT NULL;
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

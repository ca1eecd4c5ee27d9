-- 0003_publishing_claims.sql — lets the writer of an event publish it without a second transaction.
--
-- A request that can reach Redis inserts its events with publishing_since set (its claim), publishes them after
-- the commit and marks them published in one statement. Other publishers leave a claimed event alone for 30
-- seconds, so it goes out once; after that (its publisher died) it is drained like one written while Redis was
-- out. A publisher that fails to publish sets the claim back to NULL. events_guard already lets this column
-- change: it protects only the event's content.
ALTER TABLE events ADD COLUMN publishing_since timestamptz NULL;

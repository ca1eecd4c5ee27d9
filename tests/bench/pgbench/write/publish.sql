-- edge::write, after the change has committed: the events stamped with their seq, and unless another writer's
-- publish sent them already, published (marked, in a transaction that would send them to Redis before its commit).
SELECT events_stamp(:own::int8[])::int AS unpublished \gset
\if :unpublished
BEGIN;
SELECT seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind, subject_id,
       actor, data
FROM events_publish(:own::int8[], 200);
COMMIT;
\endif

-- edge::write, after the change has committed: the events stamped with their seq, and when this writer stamped them,
-- the batch not yet published read (it then goes to Redis) and marked. The app reads only after the seq Redis last
-- sent, which pgbench cannot know; here nothing else sends, so every stamper's batch is what it stamped.
SELECT events_stamp_turn(:own::int8[])::int AS stamped \gset
\if :stamped
SELECT count(*) AS batch, coalesce(max(seq), 0) AS through FROM (
    SELECT seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind,
           subject_id, actor, data
    FROM events WHERE published_at IS NULL AND seq IS NOT NULL ORDER BY seq LIMIT 200) b \gset
\if :batch
SELECT events_published_through(:through);
\endif
\endif

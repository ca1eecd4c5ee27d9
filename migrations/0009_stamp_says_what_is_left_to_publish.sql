-- 0009_stamp_says_what_is_left_to_publish.sql — events_stamp answers whether the caller still has events to publish.
--
-- After its commit a write stamps its events, then publishes: BEGIN, events_publish, COMMIT. Under load the holder
-- of the publishing lock sends a batch of up to 200 events, other writers' among them, so many writers find their
-- events published by the time they come to it, and spent three statements to learn that. Now the stamp, which
-- runs anyway, says so: it returns whether any of the caller's events is still unpublished, read after the stamp
-- in a snapshot of its own (so a publisher's committed marks are seen), and the caller publishes only then.
-- events_publish still checks again under its lock; a `true` here only means "look".
DROP FUNCTION events_stamp(bigint[]);

CREATE FUNCTION events_stamp(p_own bigint[]) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND seq IS NULL) THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('orchestrator:events.seq', 0));
        WITH top AS (SELECT coalesce(max(seq), 0) AS seq FROM events),
             pending AS (SELECT pos, row_number() OVER (ORDER BY pos) AS n FROM events WHERE seq IS NULL)
        UPDATE events e SET seq = top.seq + pending.n FROM top, pending WHERE e.pos = pending.pos;
    END IF;
    RETURN EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND published_at IS NULL);
END
$$;

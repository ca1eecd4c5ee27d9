-- 0011_event_steps_waiters_pass_together.sql — writers waiting to stamp or publish wait together, not in a queue.
--
-- The two steps of 0007 batch themselves: the holder of a step's lock stamps (or publishes) everything committed
-- by then, so most writers queued behind it find their events done. But they were queued on the same exclusive
-- lock, so each still took it in turn, one after another, to learn that (sampled under 64 writers: 49 of 53 active
-- backends waiting on the stamping lock). Now a writer that finds the lock held waits for its holder with a shared
-- lock that it gives back at once (taken in a subtransaction that is rolled back), so all the waiters wake at the
-- same moment when the holder commits, and each looks again, in parallel: only those whose events the holder
-- did not cover (committed after its snapshot) compete for the next turn.
--
-- The order arguments of 0007 are untouched: seqs are still handed out, and events still published, only by the
-- holder of the exclusive lock, each in a statement whose snapshot is taken after the lock is granted; waiting
-- shared grants nothing. A lock is released only after its holder's commit is visible, so a waiter's second look
-- sees what the holder did.

-- Whether any of the caller's events (p_own, their pos) still waits for the step: 'stamp' (its seq) or 'publish'.
CREATE FUNCTION events_left(p_own bigint[], p_step text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM events
                   WHERE pos = ANY (p_own)
                     AND CASE p_step WHEN 'stamp' THEN seq IS NULL ELSE published_at IS NULL END)
$$;

-- Returns once the advisory lock p_key is free of exclusive holders, holding nothing: the shared lock it waits on
-- is taken in a subtransaction (the block with an EXCEPTION clause) and released when it is rolled back.
CREATE FUNCTION advisory_wait(p_key bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(p_key);
    RAISE SQLSTATE 'OR000';
EXCEPTION WHEN SQLSTATE 'OR000' THEN
    RETURN;
END
$$;

-- Takes the step's exclusive lock (p_key) for the rest of the transaction and returns true; or returns false,
-- holding nothing, once the caller's events are done. A few rounds of waiting alongside the others, then a plain
-- queue: a try that keeps losing to waiters still inside their brief shared lock cannot spin for long.
CREATE FUNCTION events_turn(p_key bigint, p_own bigint[], p_step text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR round IN 1..3 LOOP
        IF NOT events_left(p_own, p_step) THEN
            RETURN false;
        END IF;
        IF pg_try_advisory_xact_lock(p_key) THEN
            RETURN true;
        END IF;
        PERFORM advisory_wait(p_key);
    END LOOP;
    IF NOT events_left(p_own, p_step) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(p_key);
    RETURN true;
END
$$;

-- As in 0009: stamps every committed event without a seq unless the caller's own are stamped (then it takes no
-- lock), and says whether any of the caller's events is still unpublished. Call it on its own, not inside a
-- transaction. The UPDATE is a statement of its own, after the lock, so its snapshot sees the previous batch.
CREATE OR REPLACE FUNCTION events_stamp(p_own bigint[]) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF events_turn(hashtextextended('orchestrator:events.seq', 0), p_own, 'stamp') THEN
        WITH top AS (SELECT coalesce(max(seq), 0) AS seq FROM events),
             pending AS (SELECT pos, row_number() OVER (ORDER BY pos) AS n FROM events WHERE seq IS NULL)
        UPDATE events e SET seq = top.seq + pending.n FROM top, pending WHERE e.pos = pending.pos;
    END IF;
    RETURN events_left(p_own, 'publish');
END
$$;

-- As in 0007: inside a transaction; publish what it returns, then commit.
CREATE OR REPLACE FUNCTION events_publish(p_own bigint[], p_limit integer) RETURNS SETOF events LANGUAGE plpgsql AS $$
BEGIN
    IF NOT events_turn(hashtextextended('orchestrator:events.published', 0), p_own, 'publish') THEN
        RETURN;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH marked AS (
        UPDATE events e SET published_at = clock_timestamp()
        WHERE e.seq IN (
            SELECT seq FROM events WHERE published_at IS NULL AND seq IS NOT NULL ORDER BY seq LIMIT p_limit)
        RETURNING e.*)
    SELECT * FROM marked ORDER BY seq;
END
$$;

-- 0013_events_published_without_a_lock.sql — publishing holds no lock across the Redis call, and takes no transaction.
--
-- Until now (0007) a writer published in a transaction of its own (BEGIN, events_publish, COMMIT), holding a lock
-- that every publisher shares across its call to Redis: three statements after the stamp, and every writer in
-- every workspace queued on that lock while its events were not yet out. Now Redis keeps the channel's order: the
-- publishing script remembers the newest seq it has sent (the head: the doorbell of every workspace, which live
-- reads already watch) and sends only the events of a batch above it, in seq order, atomically. So publishers need
-- not take turns, and a batch is no longer claimed before it is sent:
--   * Only the writer that stamped publishes (events_stamp_turn): the writers whose events its stamp covered
--     leave them to it, a statement after their stamp instead of four.
--   * Its batch is every stamped event after the head not yet marked published (the oldest 200), read without a
--     lock by a statement of its own after the stamp has committed, so only committed seqs go out. Those at or
--     below the head are out already, marked or not: under load, mostly the batch another writer is marking.
--   * Once the script has run, every event of the batch is out (sent by it, or before it: the head had passed
--     it), so the writer marks the whole batch (events_published_through), whether or not the script sent any.
-- Any snapshot sees a prefix of the seqs (0007: a batch of stamps commits before the next is numbered), so a batch
-- holds every unmarked event between the head it was read after and its last: an event whose publisher failed
-- before sending it goes out with a later batch, in order, and one sent but left unmarked is marked by a later
-- writer's mark, which covers everything up to its batch's last.
--
-- What the channel promises: every committed event at least once, in strictly increasing seq, and only committed
-- seqs. A copy goes out only when Redis lost its head (a restart without persistence) while events it had sent
-- were still unmarked; a mark lost in a Postgres crash (it commits without waiting for its flush) sends nothing
-- again, since the head has passed the event. `id` and `seq` tell copies apart. The events of a writer that
-- stamped and then could not publish (Redis out) wait, stamped, for the next stamping writer, as before.
DROP FUNCTION events_publish(bigint[], integer);
DROP FUNCTION events_stamp(bigint[]);
DROP FUNCTION events_turn(bigint, bigint[], text);
DROP FUNCTION events_left(bigint[], text);

-- Numbers every committed event still without a seq, oldest insert first, above the highest seq: 0011's stamping
-- UPDATE, for the holder of the stamping lock only. A function of its own, called as a statement after the lock is
-- granted, so its snapshot sees the previous holder's batch.
CREATE FUNCTION events_number() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH top AS (SELECT coalesce(max(seq), 0) AS seq FROM events),
         pending AS (SELECT pos, row_number() OVER (ORDER BY pos) AS n FROM events WHERE seq IS NULL)
    UPDATE events e SET seq = top.seq + pending.n FROM top, pending WHERE e.pos = pending.pos;
END
$$;

-- Whether any of the caller's events (p_own, their pos) still lacks its seq: 0011's events_left, whose other step
-- (publishing) is gone. In PL/pgSQL, not SQL: called from PL/pgSQL, a SQL function that cannot be inlined is parsed
-- and planned again on every call (Postgres 15 keeps no plan for it beyond the calling expression's run), and
-- every write calls this one at least once after its commit. Sampled with perf under 64 writers (pause/resume),
-- that parsing and planning took 11 % of Postgres's CPU; in PL/pgSQL its query is planned once per connection.
CREATE FUNCTION events_unstamped(p_own bigint[]) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND seq IS NULL);
END
$$;

-- Stamps the caller's events (p_own) when they still lack a seq, with every other committed event waiting, unless
-- another stamp has done it already; true when this call stamped. The waiting is 0011's events_turn, for the one
-- step left: a few rounds of waiting alongside the others for the holder (advisory_wait), then a plain queue.
-- It replaces events_stamp, whose answer (whether the caller's events were still unpublished) no caller needs now.
-- Call it on its own, not inside a transaction. Events a catch-up read stamped for a writer that died (or stalled
-- a second) go out with the next stamping writer's batch.
CREATE FUNCTION events_stamp_turn(p_own bigint[]) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    stamping CONSTANT bigint := hashtextextended('orchestrator:events.seq', 0);
BEGIN
    FOR round IN 1..3 LOOP
        IF NOT events_unstamped(p_own) THEN
            RETURN false;
        END IF;
        IF pg_try_advisory_xact_lock(stamping) THEN
            PERFORM events_number();
            RETURN true;
        END IF;
        PERFORM advisory_wait(stamping);
    END LOOP;
    IF NOT events_unstamped(p_own) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(stamping);
    PERFORM events_number();
    RETURN true;
END
$$;

-- Marks every stamped event up to p_seq as published: the script has sent them, or had sent them before. Its
-- commit does not wait for the flush: a mark lost in a crash only means a later batch reads the event again (and
-- the head skips it).
CREATE FUNCTION events_published_through(p_seq bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE events SET published_at = clock_timestamp()
    WHERE seq <= p_seq AND published_at IS NULL AND seq IS NOT NULL;
END
$$;

-- 0007_events_ordered_after_commit.sql — events get their seq after their transaction commits, in a short step.
--
-- Until now every writer took one advisory lock at its event INSERT and held it across its COMMIT (0002,
-- events_assign_seq), so the commits of every writer in every workspace ran one after another, each waiting for
-- its WAL flush. Now a write inserts its events without a seq and commits in parallel with the others; then it
-- calls events_stamp, which numbers every committed event still without a seq, oldest insert first, under the same
-- lock. That step is short (one UPDATE) and batches itself: whoever holds the lock stamps everything committed by
-- then, so the writers queued behind it mostly find their events stamped and leave (group commit, done by the
-- application, as etcd batches Raft entries). Why not a per-workspace order: the catch-up read across all
-- workspaces would still need one global order, and deriving one from per-workspace positions needs the same step.
--
-- Why the catch-up read stays gapless: seqs are handed out only under the lock, each batch above the previous
-- one (max(seq) + 1, 2, …), and a transaction-scoped advisory lock is released only after its commit is visible.
-- So a batch is visible before the next one is numbered, and a reader that has read up to n never later finds a
-- committed seq below n. Events not yet stamped are not read at all.
--
-- Per subject, seq order is commit order: two changes of one object are serialised by its row lock, so the later
-- one's INSERT (and its pos) comes after the earlier one's commit, and stamping goes by pos.
--
-- Publishing, a second short step (events_publish) under a lock of its own: its holder publishes every stamped
-- event not yet published, oldest first, then marks them and commits. Holders follow one another, and each finds
-- only seqs above those its predecessor published, so the channel carries events in seq order. Only committed
-- seqs go out (a stamp is visible only once its commit is flushed), so a seq seen on the channel is never
-- given to another event. The mark is committed without waiting for its flush: lost in a crash, it only means
-- the events go out again, with the same seq (delivery is at-least-once, and `id` tells the copies apart).
-- The claims of 0003 (publishing_since) are no longer needed: only a lock holder publishes.
LOCK TABLE events IN ACCESS EXCLUSIVE MODE;

DROP TRIGGER events_assign_seq ON events;
DROP FUNCTION events_assign_seq();

-- pos: the order of INSERTs (no lock, so no meaning across transactions beyond "inserted before"). seq: the order
-- of stamping, which readers and subscribers see.
CREATE SEQUENCE events_pos_seq AS bigint;
ALTER TABLE events ADD COLUMN pos bigint;
ALTER TABLE events DISABLE TRIGGER events_guard;
UPDATE events SET pos = seq;
ALTER TABLE events ENABLE TRIGGER events_guard;
SELECT setval('events_pos_seq', coalesce((SELECT max(pos) FROM events), 0) + 1, false);
ALTER TABLE events
    ALTER COLUMN pos SET DEFAULT nextval('events_pos_seq'),
    ALTER COLUMN pos SET NOT NULL,
    DROP CONSTRAINT events_pkey,
    ADD PRIMARY KEY (pos),
    ALTER COLUMN seq DROP NOT NULL,
    ADD CONSTRAINT events_seq_key UNIQUE (seq);
ALTER SEQUENCE events_pos_seq OWNED BY events.pos;
DROP SEQUENCE events_seq_seq;

DROP INDEX events_unclaimed_idx;
DROP INDEX events_claimed_idx;
ALTER TABLE events DROP COLUMN publishing_since;
-- Committed events waiting for their seq: a handful at any moment (those in flight, or left by a writer that died
-- between its commit and its stamp).
CREATE INDEX events_unstamped_idx ON events (pos) WHERE seq IS NULL;
-- Stamped events a Redis outage kept off the channel; empty while Redis is up, since stamping marks them.
CREATE INDEX events_unpublished_idx ON events (seq) WHERE published_at IS NULL AND seq IS NOT NULL;
ALTER TABLE events ADD CONSTRAINT events_published_when_stamped CHECK (published_at IS NULL OR seq IS NOT NULL);

-- seq is set once, by events_stamp; pos never changes; the content is immutable.
CREATE OR REPLACE FUNCTION events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.pos, NEW.id, NEW.type, NEW.occurred_at, NEW.workspace_id, NEW.subject_kind, NEW.subject_id, NEW.actor,
        NEW.data)
       IS DISTINCT FROM
       (OLD.pos, OLD.id, OLD.type, OLD.occurred_at, OLD.workspace_id, OLD.subject_kind, OLD.subject_id, OLD.actor,
        OLD.data)
       OR (OLD.seq IS NOT NULL AND NEW.seq IS DISTINCT FROM OLD.seq)
    THEN
        RAISE EXCEPTION 'event %: the only permitted changes are setting seq and published_at once', OLD.pos
            USING ERRCODE = 'check_violation', CONSTRAINT = 'events_guard';
    END IF;
    IF OLD.published_at IS NOT NULL THEN
        NEW.published_at := OLD.published_at;
    END IF;
    RETURN NEW;
END
$$;

-- Stamps every committed event without a seq, unless the caller's own events (p_own, their pos) are stamped
-- already: then it takes no lock. Call it on its own (not inside a transaction), so the lock is held only for it.
--
-- The lock is taken in a statement of its own: under READ COMMITTED each statement of a volatile function takes
-- a fresh snapshot, so the statements after it see the previous holder's committed batch (and max(seq)).
CREATE FUNCTION events_stamp(p_own bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND seq IS NULL) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('orchestrator:events.seq', 0));
    WITH top AS (SELECT coalesce(max(seq), 0) AS seq FROM events),
         pending AS (SELECT pos, row_number() OVER (ORDER BY pos) AS n FROM events WHERE seq IS NULL)
    UPDATE events e SET seq = top.seq + pending.n FROM top, pending WHERE e.pos = pending.pos;
END
$$;

-- Marks as published the oldest p_limit stamped events not yet published and returns them in seq order, unless
-- the caller's own events are published already (then it takes no lock). Call it inside a transaction, publish
-- what it returns, then commit (or roll back if the publish failed): the lock covers the publish.
CREATE FUNCTION events_publish(p_own bigint[], p_limit integer) RETURNS SETOF events LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND published_at IS NULL) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('orchestrator:events.published', 0));
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

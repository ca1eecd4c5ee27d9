-- 0004_striped_worker_counts.sql — spreads each (workspace, status) counter over 16 rows.
--
-- Every worker that moves bumps two counters, whose rows stay locked until its transaction commits, so with one row
-- per (workspace, status) all moves in a workspace queued behind each other. A worker's moves now bump the rows of
-- its stripe (a hash of its id), so moves of different workers rarely meet. Readers add the stripes up, as they
-- already did across workspaces:
--   SELECT status, sum(count) FROM worker_counts [WHERE workspace_id = $1] GROUP BY status
LOCK TABLE workers IN SHARE MODE;

ALTER TABLE worker_counts ADD COLUMN stripe smallint NOT NULL DEFAULT 0
    CONSTRAINT worker_counts_stripe_range CHECK (stripe BETWEEN 0 AND 15);
ALTER TABLE worker_counts DROP CONSTRAINT worker_counts_pkey;
DELETE FROM worker_counts;
ALTER TABLE worker_counts ADD PRIMARY KEY (workspace_id, status, stripe);

CREATE FUNCTION worker_counts_stripe(p_worker_id text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (hashtext(p_worker_id) & 15)::smallint;

INSERT INTO worker_counts (workspace_id, status, stripe, count)
SELECT workspace_id, status, worker_counts_stripe(id), count(*) FROM workers GROUP BY 1, 2, 3;

DROP FUNCTION worker_counts_bump(text, text, integer);

CREATE FUNCTION worker_counts_bump(p_workspace_id text, p_status text, p_stripe smallint, p_delta integer)
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_delta > 0 THEN
        INSERT INTO worker_counts AS c (workspace_id, status, stripe, count)
        VALUES (p_workspace_id, p_status, p_stripe, p_delta)
        ON CONFLICT (workspace_id, status, stripe) DO UPDATE SET count = c.count + EXCLUDED.count;
    ELSE
        UPDATE worker_counts SET count = count + p_delta
         WHERE workspace_id = p_workspace_id AND status = p_status AND stripe = p_stripe;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'worker_counts has no row for (%, %, %)', p_workspace_id, p_status, p_stripe
                USING ERRCODE = 'check_violation', CONSTRAINT = 'worker_counts_maintain';
        END IF;
    END IF;
END
$$;

-- As before, one UPDATE touches its two rows in (workspace_id, status) order, so opposite moves cannot deadlock.
CREATE OR REPLACE FUNCTION worker_counts_maintain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM worker_counts_bump(NEW.workspace_id, NEW.status, worker_counts_stripe(NEW.id), 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM worker_counts_bump(OLD.workspace_id, OLD.status, worker_counts_stripe(OLD.id), -1);
    ELSIF (NEW.workspace_id, NEW.status) IS DISTINCT FROM (OLD.workspace_id, OLD.status) THEN
        IF (OLD.workspace_id, OLD.status) < (NEW.workspace_id, NEW.status) THEN
            PERFORM worker_counts_bump(OLD.workspace_id, OLD.status, worker_counts_stripe(OLD.id), -1);
            PERFORM worker_counts_bump(NEW.workspace_id, NEW.status, worker_counts_stripe(NEW.id), 1);
        ELSE
            PERFORM worker_counts_bump(NEW.workspace_id, NEW.status, worker_counts_stripe(NEW.id), 1);
            PERFORM worker_counts_bump(OLD.workspace_id, OLD.status, worker_counts_stripe(OLD.id), -1);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- 0010_striped_quotas.sql — spreads each depth's quota over 16 rows, so allocations at one depth commit in parallel.
--
-- Every grant and release at a depth held that depth's quotas row until its commit, so all allocations at a depth on
-- every instance queued behind each other (issue 10). Now a depth's limit is spread over quota_stripes, and a job
-- draws from the stripe its id hashes to:
--   * A grant its own stripe can cover is one conditional UPDATE of that row, which also checks that the rows
--     follow the configured limit (quotas.max_workers): quota_take below. It is exact, since the depth has at
--     least what one of its stripes has free, and when it grants nothing it leaves nothing locked.
--   * Any other grant locks every stripe of the depth in stripe order, decides on the depth's total, and lays the
--     depth out anew for the limit it decided under (orchestrator_core::quota::Layout): each stripe keeps what it
--     holds plus an even share of what is free, and quotas.max_workers records that limit.
--   * A release lowers its stripe's allocated.
-- Only a step over a whole depth changes a capacity, so a depth's capacities always add up to the limit its rows are
-- laid out for, and a changed limit acts on the first grant that meets it (the fast path does not match, so it
-- takes the step). So what the stripes have free is what the depth has free: "never over-grant" holds as it did
-- with one row.
--
-- Lock order: jobs, then stripes in (depth, stripe) order, then the quotas row (only a step over a whole depth
-- writes it).
LOCK TABLE quotas, allocations IN SHARE MODE;

CREATE FUNCTION quota_stripe(p_job_id text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (hashtext(p_job_id) & 15)::smallint;

CREATE TABLE quota_stripes (
    depth     smallint NOT NULL REFERENCES quotas (depth),
    stripe    smallint NOT NULL CONSTRAINT quota_stripes_stripe_range CHECK (stripe BETWEEN 0 AND 15),
    capacity  integer  NOT NULL,
    allocated integer  NOT NULL DEFAULT 0,
    PRIMARY KEY (depth, stripe),
    CONSTRAINT quota_stripes_allocated_within_capacity CHECK (allocated >= 0 AND allocated <= capacity)
);

-- Takes p_workers at p_depth from p_job_id's stripe if it has them free and the rows are laid out for p_max_workers;
-- false, with nothing changed and nothing locked, otherwise. The block is a subtransaction for a reason: an UPDATE
-- that waited for a stripe another transaction was changing, and found no room in the new version, keeps that row
-- locked (Postgres locks the newest version before it rechecks the condition). The caller would then lock every
-- stripe of the depth while already holding one out of order, and two such callers deadlock. Raising rolls the
-- subtransaction back, which releases the lock.
CREATE FUNCTION quota_take(p_job_id text, p_depth bigint, p_max_workers bigint, p_workers bigint)
    RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE quota_stripes s SET allocated = s.allocated + p_workers
      FROM quotas q
     WHERE s.depth = p_depth AND s.stripe = quota_stripe(p_job_id) AND s.capacity - s.allocated >= p_workers
       AND q.depth = s.depth AND q.max_workers = p_max_workers;
    IF NOT FOUND THEN
        RAISE no_data_found;
    END IF;
    RETURN true;
EXCEPTION WHEN no_data_found THEN
    RETURN false;
END
$$;

-- An allocation is drawn from, and given back to, its job's stripe.
ALTER TABLE allocations ADD COLUMN stripe smallint GENERATED ALWAYS AS (quota_stripe(job_id)) STORED;
DROP INDEX allocations_open_depth_idx;
CREATE INDEX allocations_open_stripe_idx ON allocations (depth, stripe) INCLUDE (workers) WHERE released_at IS NULL;

-- The rows as a step over the whole depth would lay them out. quotas.max_workers was kept at
-- GREATEST(configured, allocated), so there is room for what is held.
INSERT INTO quota_stripes (depth, stripe, capacity, allocated)
SELECT q.depth, s.stripe,
       held.workers + (q.max_workers - total.workers) / 16
           + CASE WHEN s.stripe < (q.max_workers - total.workers) % 16 THEN 1 ELSE 0 END,
       held.workers
FROM quotas q
CROSS JOIN generate_series(0, 15) AS s(stripe)
CROSS JOIN LATERAL (SELECT coalesce(sum(workers), 0)::integer AS workers FROM allocations a
                    WHERE a.depth = q.depth AND a.stripe = s.stripe AND a.released_at IS NULL) held
CROSS JOIN LATERAL (SELECT coalesce(sum(workers), 0)::integer AS workers FROM allocations a
                    WHERE a.depth = q.depth AND a.released_at IS NULL) total;

-- quotas keeps the limit the stripes are laid out for; what is allocated is the stripes' sum.
DROP TRIGGER allocation_ledger_quotas ON quotas;
ALTER TABLE quotas DROP COLUMN allocated;

-- What GET /api/resources/usage reads, and what the tests check the ledger against.
CREATE VIEW quota_usage AS
SELECT q.depth, q.max_workers, sum(s.allocated)::int8 AS allocated
FROM quotas q JOIN quota_stripes s USING (depth)
GROUP BY q.depth, q.max_workers;

-- The commit-time ledger check, now per stripe: every writer of a stripe's allocations holds its row until commit,
-- so the check stays exact.
CREATE FUNCTION ledger_check_stripe(p_depth smallint, p_stripe smallint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    counted integer;
    held    bigint;
BEGIN
    SELECT allocated INTO counted FROM quota_stripes WHERE depth = p_depth AND stripe = p_stripe;
    SELECT COALESCE(SUM(workers), 0) INTO held FROM allocations
     WHERE depth = p_depth AND stripe = p_stripe AND released_at IS NULL;
    IF counted IS DISTINCT FROM held THEN
        RAISE EXCEPTION 'quota_stripes.allocated at depth %, stripe % is % but open allocations hold %',
            p_depth, p_stripe, counted, held
            USING ERRCODE = 'check_violation', CONSTRAINT = 'allocation_ledger';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION allocation_ledger_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'allocations' THEN
        IF TG_OP <> 'DELETE' THEN
            PERFORM ledger_check_stripe(NEW.depth, NEW.stripe);
            PERFORM ledger_check_job(NEW.job_id);
        ELSE
            PERFORM ledger_check_stripe(OLD.depth, OLD.stripe);
            PERFORM ledger_check_job(OLD.job_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'quota_stripes' THEN
        PERFORM ledger_check_stripe(NEW.depth, NEW.stripe);
    ELSIF TG_TABLE_NAME = 'jobs' THEN
        PERFORM ledger_check_job(NEW.id);
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION ledger_check_depth(smallint);

CREATE CONSTRAINT TRIGGER allocation_ledger_quota_stripes AFTER INSERT OR UPDATE OF allocated ON quota_stripes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION allocation_ledger_check();

-- A depth's capacities add up to its limit. Only a step that holds every stripe of the depth changes them, so the
-- check is exact for callers that follow the protocol and fails loudly for those that don't.
CREATE FUNCTION quota_layout_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    limited integer;
    spread  bigint;
BEGIN
    SELECT max_workers INTO limited FROM quotas WHERE depth = NEW.depth;
    SELECT sum(capacity) INTO spread FROM quota_stripes WHERE depth = NEW.depth;
    IF spread IS DISTINCT FROM limited::bigint THEN
        RAISE EXCEPTION 'depth % spreads % over its stripes but its limit is %', NEW.depth, spread, limited
            USING ERRCODE = 'check_violation', CONSTRAINT = 'quota_layout';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER quota_layout_stripes AFTER UPDATE OF capacity ON quota_stripes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.capacity <> OLD.capacity)
    EXECUTE FUNCTION quota_layout_check();
CREATE CONSTRAINT TRIGGER quota_layout_quotas AFTER UPDATE OF max_workers ON quotas
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION quota_layout_check();

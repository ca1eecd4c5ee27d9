-- 0005_job_counts.sql — counters behind the job list's `total`, so counting never scans jobs.
--
-- One row per (workspace, status, depth, stripe), kept in the transaction of every change to jobs. GET /api/jobs
-- adds up the rows its filters select (workspace_id, status, depth); only a parent_job_id filter still counts
-- jobs, over that parent's children. As in worker_counts, a job's changes bump the rows of its stripe (a hash of
-- its id), so concurrent submissions in one workspace rarely wait for each other.
--
-- Maintained per statement, from the statement's transition tables: a cascading cancel changes many jobs in one
-- UPDATE, and applying its net changes in key order (one INSERT … ON CONFLICT) means two such statements lock
-- their counter rows in the same order and cannot deadlock. Statements that change no counted column net to
-- nothing and write nothing.
LOCK TABLE jobs IN SHARE MODE;

CREATE TABLE job_counts (
    workspace_id text     NOT NULL,
    status       text     NOT NULL
                          CONSTRAINT job_counts_status_valid
                          CHECK (status IN ('SUBMITTED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED')),
    depth        smallint NOT NULL CONSTRAINT job_counts_depth_range CHECK (depth BETWEEN 0 AND 5),
    stripe       smallint NOT NULL CONSTRAINT job_counts_stripe_range CHECK (stripe BETWEEN 0 AND 15),
    count        bigint   NOT NULL,
    PRIMARY KEY (workspace_id, status, depth, stripe)
);

CREATE FUNCTION job_counts_stripe(p_job_id text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (hashtext(p_job_id) & 15)::smallint;

INSERT INTO job_counts (workspace_id, status, depth, stripe, count)
SELECT workspace_id, status, depth, job_counts_stripe(id), count(*) FROM jobs GROUP BY 1, 2, 3, 4;

-- Each branch adds its statement's net changes, in key order, in one INSERT … ON CONFLICT. A count may not go below
-- zero; that is checked on the result rather than by a CHECK, which would judge a negative change on its own.
CREATE FUNCTION job_counts_maintain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    negative boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH applied AS (
            INSERT INTO job_counts AS c (workspace_id, status, depth, stripe, count)
            SELECT workspace_id, status, depth, job_counts_stripe(id), count(*) FROM new_jobs
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (workspace_id, status, depth, stripe) DO UPDATE SET count = c.count + EXCLUDED.count
            RETURNING count)
        SELECT bool_or(count < 0) INTO negative FROM applied;
    ELSIF TG_OP = 'DELETE' THEN
        WITH applied AS (
            INSERT INTO job_counts AS c (workspace_id, status, depth, stripe, count)
            SELECT workspace_id, status, depth, job_counts_stripe(id), -count(*) FROM old_jobs
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (workspace_id, status, depth, stripe) DO UPDATE SET count = c.count + EXCLUDED.count
            RETURNING count)
        SELECT bool_or(count < 0) INTO negative FROM applied;
    ELSE
        WITH applied AS (
            INSERT INTO job_counts AS c (workspace_id, status, depth, stripe, count)
            SELECT workspace_id, status, depth, stripe, sum(delta) FROM (
                SELECT workspace_id, status, depth, job_counts_stripe(id) AS stripe, 1 AS delta FROM new_jobs
                UNION ALL
                SELECT workspace_id, status, depth, job_counts_stripe(id), -1 FROM old_jobs) changes
            GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3, 4
            ON CONFLICT (workspace_id, status, depth, stripe) DO UPDATE SET count = c.count + EXCLUDED.count
            RETURNING count)
        SELECT bool_or(count < 0) INTO negative FROM applied;
    END IF;
    IF negative THEN
        RAISE EXCEPTION 'job_counts would go below zero'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_counts_maintain';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_counts_on_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION job_counts_maintain();
CREATE TRIGGER job_counts_on_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION job_counts_maintain();
CREATE TRIGGER job_counts_on_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_jobs FOR EACH STATEMENT EXECUTE FUNCTION job_counts_maintain();

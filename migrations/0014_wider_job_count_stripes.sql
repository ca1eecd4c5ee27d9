-- 0014_wider_job_count_stripes.sql — 64 stripes per job counter instead of 16.
--
-- A submission holds the counter row of its job's stripe (workspace, PENDING, depth, stripe) from its INSERT to its
-- COMMIT. Sampling pg_stat_activity every 50 ms during `scripts/bench` submit at 64 connections in one workspace, on
-- average 18.8 backends waited at that INSERT for another transaction (Lock:transactionid): 64 writers on 16 rows,
-- about four to a row. With 64 stripes most submissions find theirs free. Reads add up four times as many rows
-- (at most 64 per workspace, status and depth), which the primary key serves.
--
-- A job's stripe is a hash of its id, so the counts are recomputed for the new stripes: a change must bump the row
-- its job was counted in.
LOCK TABLE jobs IN SHARE MODE;
LOCK TABLE job_counts IN ACCESS EXCLUSIVE MODE;

ALTER TABLE job_counts
    DROP CONSTRAINT job_counts_stripe_range,
    ADD CONSTRAINT job_counts_stripe_range CHECK (stripe BETWEEN 0 AND 63);

CREATE OR REPLACE FUNCTION job_counts_stripe(p_job_id text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (hashtext(p_job_id) & 63)::smallint;

DELETE FROM job_counts;
INSERT INTO job_counts (workspace_id, status, depth, stripe, count)
SELECT workspace_id, status, depth, job_counts_stripe(id), count(*) FROM jobs GROUP BY 1, 2, 3, 4;

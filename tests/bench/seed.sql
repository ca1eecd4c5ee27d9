-- seed.sql — fills a freshly migrated database for scripts/bench.
--
--   psql -v workers=N -v runs=R -v pool=P -v workspaces=W -f seed.sql
--
-- In proportion to N workers: N/10 jobs (half of them children of the other half), one audit row per worker and
-- per job, one published event per worker, and a released allocation per job that ever ran. 90 % of everything is
-- in workspace `bench` (the benchmark token's), the rest spread over nine others, so workspace filters do work.
-- Rows are spread over the past, in id order, like a table that grew over time.
--
-- Then what the write benchmarks use up, for each of R runs: P RUNNING workers for the pause/resume cycle and P
-- PENDING jobs (over depths 0-5, under a chain of running parents) for allocate/release, all in workspace `bench`
-- when W is 1, else member k in workspace bench-(k mod W), each workspace with its own chain of parents; and quotas
-- large enough that no grant is refused.
--
-- Triggers (and with them the foreign-key checks) are off while seeding, so this file keeps every rule itself:
-- it fills worker_counts, job_counts and the event sequence as the triggers would have. It seeds the schema of
-- today and, for the bench's row of the earlier design, the one from before migration 0007.
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL session_replication_role = replica;

INSERT INTO workers (id, workspace_id, status, metadata, created_at, updated_at, version)
SELECT 'w-' || g,
       CASE WHEN g % 10 = 0 THEN 'ws-' || (g / 10) % 9 ELSE 'bench' END,
       s.status,
       jsonb_build_object('model', 'bench', 'slot', g),
       t.at, t.at + CASE WHEN s.status = 'IDLE' THEN interval '0' ELSE interval '1 minute' END,
       CASE WHEN s.status = 'IDLE' THEN 1 ELSE 2 END
FROM generate_series(1, :workers) g,
     LATERAL (SELECT (ARRAY['IDLE', 'RUNNING', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED'])[1 + g % 7]
                     AS status) s,
     LATERAL (SELECT now() - interval '30 days' + g * interval '1 second' AS at) t;

INSERT INTO worker_transitions (worker_id, from_state, to_state, actor, at)
SELECT id, NULL, 'IDLE', 'bench-seed', created_at FROM workers;

INSERT INTO events (seq, type, occurred_at, workspace_id, subject_kind, subject_id, actor, data, published_at)
SELECT row_number() OVER (ORDER BY created_at, id), 'worker.registered', created_at, workspace_id, 'worker', id,
       'bench-seed', jsonb_build_object('id', id), created_at
FROM workers;

-- Jobs: odd g a root at depth 0, even g its child at depth 1; a root and its child share workspace and state.
INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id,
                  created_at, updated_at, started_at, completed_at, version, result, error)
SELECT 'j-' || g, w.workspace_id, s.status, 'benchmark job ' || g, 1 + g % 10, (1 - g % 2),
       CASE WHEN g % 2 = 0 THEN 'j-' || (g - 1) END,
       t.at, t.at + interval '2 seconds',
       CASE WHEN s.status IN ('RUNNING', 'COMPLETED', 'FAILED') THEN t.at + interval '1 second' END,
       CASE WHEN s.status IN ('COMPLETED', 'FAILED', 'CANCELED') THEN t.at + interval '2 seconds' END,
       CASE WHEN s.status = 'PENDING' THEN 1 ELSE 3 END,
       CASE WHEN s.status = 'COMPLETED' THEN '{"ok": true}'::jsonb END,
       CASE WHEN s.status = 'FAILED' THEN 'benchmark failure' END
FROM generate_series(1, greatest(:workers / 10, 2)) g,
     LATERAL (SELECT (g + 1) / 2 AS root) r,
     LATERAL (SELECT CASE WHEN r.root % 10 = 0 THEN 'ws-' || (r.root / 10) % 9 ELSE 'bench' END
                     AS workspace_id) w,
     LATERAL (SELECT (ARRAY['PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED'])[1 + r.root % 5] AS status) s,
     LATERAL (SELECT now() - interval '30 days' + g * interval '10 seconds' AS at) t;

INSERT INTO job_transitions (job_id, from_state, to_state, actor, at)
SELECT id, NULL, 'SUBMITTED', 'bench-seed', created_at FROM jobs;

INSERT INTO allocations (id, job_id, workspace_id, depth, workers, created_at, released_at)
SELECT 'a-' || substr(id, 3), id, workspace_id, depth, worker_count,
       started_at, started_at + interval '1 second'
FROM jobs WHERE started_at IS NOT NULL;

-- What the write benchmarks use: run r's pause/resume workers and allocate/release jobs. Member k's workspace,
-- and its parent at depth d (of its workspace's chain).
CREATE FUNCTION pg_temp.bench_workspace(k bigint) RETURNS text LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN :workspaces = 1 THEN 'bench' ELSE 'bench-' || k % :workspaces END;
CREATE FUNCTION pg_temp.bench_parent(k bigint, d integer) RETURNS text LANGUAGE sql IMMUTABLE
    RETURN 'parent-' || CASE WHEN :workspaces = 1 THEN '' ELSE (k % :workspaces) || '-' END || d;
INSERT INTO workers (id, workspace_id, status, created_at, updated_at, version)
SELECT 'cycle-' || r || '-' || k, pg_temp.bench_workspace(k), 'RUNNING', now(), now(), 2
FROM generate_series(1, :runs) r, generate_series(1, :pool) k;

INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id,
                  created_at, updated_at, started_at, version)
SELECT pg_temp.bench_parent(w, d), pg_temp.bench_workspace(w), 'RUNNING', 'benchmark parent at depth ' || d,
       1, d, CASE WHEN d > 0 THEN pg_temp.bench_parent(w, d - 1) END, now(), now(), now(), 2
FROM generate_series(0, least(:workspaces, :pool) - 1) w, generate_series(0, 4) d;

INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id,
                  created_at, updated_at)
SELECT 'alloc-' || r || '-' || k, pg_temp.bench_workspace(k), 'PENDING', 'benchmark allocation', 1, k % 6,
       CASE WHEN k % 6 > 0 THEN pg_temp.bench_parent(k, k % 6 - 1) END, now(), now()
FROM generate_series(1, :runs) r, generate_series(1, :pool) k;

-- What the triggers would have kept.
INSERT INTO worker_counts (workspace_id, status, stripe, count)
SELECT workspace_id, status, worker_counts_stripe(id), count(*) FROM workers GROUP BY 1, 2, 3;
INSERT INTO job_counts (workspace_id, status, depth, stripe, count)
SELECT workspace_id, status, depth, job_counts_stripe(id), count(*) FROM jobs GROUP BY 1, 2, 3, 4;
-- The sequence the triggers drew seq from, in a schema from before migration 0007 (the pgbench row of the earlier
-- design); since 0007 seq is stamped as max + 1 and pos has taken its numbers from its default.
SELECT setval(oid::regclass, (SELECT max(seq) FROM events)) FROM pg_class WHERE relname = 'events_seq_seq';
UPDATE quotas SET max_workers = 1000000000;
-- Since migration 0010 the limit is spread over each depth's 16 stripes, evenly, as a grant that holds them all
-- lays it out; every seeded allocation is released, so the stripes hold nothing.
SELECT to_regclass('quota_stripes') IS NOT NULL AS striped \gset
\if :striped
UPDATE quota_stripes SET capacity = 1000000000 / 16, allocated = 0;
\endif
COMMIT;

VACUUM ANALYZE;

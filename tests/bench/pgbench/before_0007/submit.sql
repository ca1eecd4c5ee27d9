-- POST /api/jobs/submit with an Idempotency-Key (jobs::submit through edge::write): the same statements, with
-- pgbench variables for their parameters. Redis round trips are not in here.
\include write/begin
INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id)
VALUES ('pg-' || :keys || '-' || :client_id || '-' || :sent, 'bench', 'PENDING', 'benchmark job', 1::int8, 0::int8,
        NULL)
ON CONFLICT (id) DO NOTHING
RETURNING id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers,
          (extract(epoch from created_at) * 1000)::int8, (extract(epoch from updated_at) * 1000)::int8,
          (extract(epoch from started_at) * 1000)::int8, (extract(epoch from completed_at) * 1000)::int8,
          version, result, error,
          'job.submitted|job.state.changed' AS event_types, 'job|job' AS event_kinds,
          id || '|' || id AS event_subjects,
          jsonb_build_object('id', id, 'task_description', task_description)::text
              || '|{"from": "SUBMITTED", "to": "PENDING", "reason": null}' AS event_data \gset
INSERT INTO job_transitions (job_id, from_state, to_state, reason, actor, at)
SELECT s, f, t, r, a, clock_timestamp()
FROM unnest(ARRAY[:id, :id], ARRAY[NULL, 'SUBMITTED'], ARRAY['SUBMITTED', 'PENDING'], ARRAY[NULL, NULL]::text[],
            ARRAY['bench', 'bench']) WITH ORDINALITY AS e(s, f, t, r, a, n) ORDER BY n;
\set status 201
\set body_bytes 400
\include write/record
\include write/events

-- POST /api/jobs/submit with an Idempotency-Key (jobs::submit through edge::write): the same statements, with
-- pgbench variables for their parameters, in workspace `bench` or spread over :workspaces. Redis round trips are
-- not in here.
\include write/begin
INSERT INTO jobs (id, workspace_id, status, task_description, worker_count, depth, parent_job_id)
VALUES ('pg-' || :keys || '-' || :client_id || '-' || :sent,
        CASE WHEN :workspaces::int8 = 1 THEN 'bench' ELSE 'bench-' || :sent::int8 % :workspaces::int8 END,
        'PENDING', 'benchmark job', 1::int8, 0::int8, NULL)
ON CONFLICT (id) DO NOTHING
RETURNING id, workspace_id, status, task_description, worker_count, depth, parent_job_id, allocated_workers,
          (extract(epoch from created_at) * 1000)::int8, (extract(epoch from updated_at) * 1000)::int8,
          (extract(epoch from started_at) * 1000)::int8, (extract(epoch from completed_at) * 1000)::int8,
          version, result, error,
          'job.submitted|job.state.changed' AS event_types, 'job|job' AS event_kinds,
          id || '|' || id AS event_subjects,
          jsonb_build_object('id', id, 'task_description', task_description)::text
              || '|{"from": "SUBMITTED", "to": "PENDING", "reason": null}' AS event_data,
          ARRAY[id, id]::text AS jm_subjects, '{NULL,SUBMITTED}' AS jm_from, '{SUBMITTED,PENDING}' AS jm_to,
          '{}' AS wm_subjects, '{}' AS wm_from, '{}' AS wm_to \gset
\set status 201
\set body_bytes 400
\include write/settle
\include write/commit

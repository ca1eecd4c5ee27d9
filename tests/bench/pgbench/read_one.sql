-- GET /api/supervisor/workers/{id} (store::workers::get), with pgbench variables for its parameters.
\set g random(1, :workers)
\if :g % 10 = 0
\set g :g - 1
\endif
SELECT id, workspace_id, status, metadata, (extract(epoch from created_at) * 1000)::int8,
       (extract(epoch from updated_at) * 1000)::int8, version, (extract(epoch from last_heartbeat_at) * 1000)::int8
FROM workers WHERE id = 'w-' || :g;

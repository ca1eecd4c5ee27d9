-- GET /api/supervisor/workers?limit=50&offset=… for a workspace token (store::workers::list and ::count).
\set offset 50 * random(0, 19)
SELECT id, workspace_id, status, metadata, (extract(epoch from created_at) * 1000)::int8,
       (extract(epoch from updated_at) * 1000)::int8, version, (extract(epoch from last_heartbeat_at) * 1000)::int8
FROM workers WHERE workspace_id = 'bench' ORDER BY created_at, id LIMIT 50 OFFSET :offset;
SELECT coalesce(sum(count), 0)::int8 FROM worker_counts WHERE workspace_id = 'bench';

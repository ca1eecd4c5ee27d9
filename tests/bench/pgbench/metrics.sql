-- GET /api/supervisor/metrics for a workspace token (store::workers::count_by_status).
SELECT status, sum(count)::int8 FROM worker_counts WHERE workspace_id = 'bench' GROUP BY status;

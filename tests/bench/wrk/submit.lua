-- POST /api/jobs/submit with an Idempotency-Key: a new root job in the token's workspace, or with BENCH_WORKSPACES
-- above 1 (an operator's token) in workspace bench-<n mod BENCH_WORKSPACES>, round-robin.
local spread = tonumber(os.getenv("BENCH_WORKSPACES") or "1")
function request()
    sent = sent + 1
    local workspace = spread > 1 and ',"workspace_id":"bench-' .. (sent % spread) .. '"' or ""
    local body = '{"task_description":"benchmark job","worker_count":1' .. workspace .. '}'
    return wrk.format("POST", "/api/jobs/submit", headers({["Idempotency-Key"] = idempotency_key()}), body)
end

-- POST /api/supervisor/workers/{id}/pause, then /resume, with an Idempotency-Key each: the seeded RUNNING
-- workers cycle-<run>-<k>, each paused and later resumed.
function request()
    local k, first = next_in_cycle()
    local action = first and "pause" or "resume"
    local path = "/api/supervisor/workers/cycle-" .. pool_run .. "-" .. k .. "/" .. action
    return wrk.format("POST", path, headers({["Idempotency-Key"] = idempotency_key()}), "{}")
end

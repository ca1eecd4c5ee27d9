-- POST /api/jobs/submit with an Idempotency-Key: a new root job in the token's workspace.
local body = '{"task_description":"benchmark job","worker_count":1}'
function request()
    sent = sent + 1
    return wrk.format("POST", "/api/jobs/submit", headers({["Idempotency-Key"] = idempotency_key()}), body)
end

-- POST /api/resources/allocate one worker, then /release, with an Idempotency-Key each: the seeded jobs
-- alloc-<run>-<k> at depth k % 6 (the first grant starts a PENDING job).
function request()
    local k, first = next_in_cycle()
    local job = '"job_id":"alloc-' .. pool_run .. '-' .. k .. '","depth":' .. k % 6
    local path, body
    if first then
        path, body = "/api/resources/allocate", "{" .. job .. ',"worker_count":1}'
    else
        path, body = "/api/resources/release", "{" .. job .. "}"
    end
    return wrk.format("POST", path, headers({["Idempotency-Key"] = idempotency_key()}), body)
end

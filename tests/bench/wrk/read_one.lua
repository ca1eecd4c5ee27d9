-- GET /api/supervisor/workers/{id}: a random seeded worker of the token's workspace (w-<g>, g not a multiple of 10).
function request()
    local g = math.random(1, workers)
    if g % 10 == 0 then g = g - 1 end
    return wrk.format("GET", "/api/supervisor/workers/w-" .. g)
end

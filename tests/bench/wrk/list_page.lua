-- GET /api/supervisor/workers: one of the first twenty pages of the token's workspace, with its total.
function request()
    return wrk.format("GET", "/api/supervisor/workers?limit=50&offset=" .. 50 * math.random(0, 19))
end

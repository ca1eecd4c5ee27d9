-- GET /api/supervisor/metrics: the token's workspace, by status.
function request()
    return wrk.format("GET", "/api/supervisor/metrics")
end

-- GET /.well-known/spin/health: answered by the host itself, no component — the ceiling for any request.
function request()
    return wrk.format("GET", "/.well-known/spin/health")
end

-- common.lua — what every benchmark group shares; scripts/bench puts it in front of the group's script.
-- Environment: BENCH_TOKEN (bearer), BENCH_KEYS (prefix making Idempotency-Keys unique to this run),
-- BENCH_THREADS (wrk's -t), BENCH_POOL and BENCH_POOL_RUN (which seeded workers/jobs the write groups use).
local token = os.getenv("BENCH_TOKEN")
local keys = os.getenv("BENCH_KEYS") or "bench"
threads = tonumber(os.getenv("BENCH_THREADS") or "1")
pool = tonumber(os.getenv("BENCH_POOL") or "1")
pool_run = os.getenv("BENCH_POOL_RUN") or "1"
workers = tonumber(os.getenv("BENCH_WORKERS") or "1")

wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

local next_thread = 0
function setup(thread)
    thread:set("thread_id", next_thread)
    next_thread = next_thread + 1
end

sent = 0

function init(args)
    math.randomseed(os.time() * 100 + thread_id)
    -- wrk calls request() once on the first thread to check it, before sending anything: that call must not
    -- use up the first half of a member's cycle, or the member's second request (a slice later) would find it
    -- never moved and be refused (409).
    if thread_id == 0 then sent = -1 end
end

-- The request's headers: the common ones plus `extra` (wrk.format replaces, not merges).
function headers(extra)
    local all = {}
    for name, value in pairs(wrk.headers) do all[name] = value end
    for name, value in pairs(extra or {}) do all[name] = value end
    return all
end

function idempotency_key()
    return keys .. "-" .. thread_id .. "-" .. sent
end

-- The pool member for this request and whether it is the first or the second half of its cycle. Each thread
-- takes its own slice of the pool round-robin, so a member's next request comes a whole slice later, long after
-- its previous one was answered: the cycle never races itself.
function next_in_cycle()
    local slice = math.floor(pool / threads)
    local n = sent
    sent = sent + 1
    local member = thread_id * slice + (n % slice) + 1
    return member, math.floor(n / slice) % 2 == 0
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx":%d,' ..
        '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
        summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
        latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end

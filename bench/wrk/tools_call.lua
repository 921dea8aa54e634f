-- Headline workload: POST /mcp, JSON-RPC tools/call of `echo` {"message":"hello"}, HTTP/1.1 keep-alive.
--
-- Environment (all optional):
--   BENCH_PATH        request path (default /mcp)
--   BENCH_MESSAGE     echo argument (default hello)
--   BENCH_STATUS_CB   "0" disables the per-response status callback (then only wrk's own
--                     count of status >= 400 is available) -- for checking the callback's cost.
--
-- done() prints one line starting with "BENCH_JSON " followed by a JSON object; bench/run.py
-- parses it. Latencies are in microseconds (wrk's unit).

local path = os.getenv("BENCH_PATH") or "/mcp"
local message = os.getenv("BENCH_MESSAGE") or "hello"
local count_status = os.getenv("BENCH_STATUS_CB") ~= "0"

wrk.method = "POST"
wrk.path = path
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"'
    .. message .. '"}}}'

-- One Lua state per wrk thread; setup() runs in the main state and keeps a handle on each.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non200 = 0
    statuses = {}
end

if count_status then
    -- Defining response() makes wrk hand every response to Lua; it costs load-generator CPU,
    -- which is why BENCH_STATUS_CB=0 exists.
    function response(status, headers, body)
        if status ~= 200 then
            non200 = non200 + 1
            statuses[status] = (statuses[status] or 0) + 1
        end
    end
end

local function json_statuses(t)
    local parts = {}
    for code, n in pairs(t) do
        table.insert(parts, string.format('"%d":%d', code, n))
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
    local total_non200 = 0
    local merged = {}
    for _, thread in ipairs(threads) do
        total_non200 = total_non200 + (thread:get("non200") or 0)
        local st = thread:get("statuses")
        if st then
            for code, n in pairs(st) do
                merged[code] = (merged[code] or 0) + n
            end
        end
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"status_callback":%s,"non200":%d,"non200_by_status":%s,' ..
        '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
        '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
        summary.duration, summary.requests, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        tostring(count_status), total_non200, json_statuses(merged),
        latency.min, latency.mean, latency.stdev, latency.max,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9)))
end

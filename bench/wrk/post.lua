-- One POST, repeated on every keep-alive connection: the request comes from a file that
-- bench/run.py writes, so the load test sends exactly the bytes the correctness check sent.
--
-- Environment:
--   BENCH_REQUEST     path of the request file (required): header lines "Name: value", an empty
--                     line, then the body (any bytes, e.g. a 64 KiB JSON-RPC request)
--   BENCH_PATH        request path (default /mcp)
--   BENCH_STATUS_CB   "0" disables the per-response status callback (then only wrk's own
--                     count of status >= 400 is available) -- for checking the callback's cost.
--   BENCH_ID_MARK     if set, a string in the body (e.g. "__BENCH_ID__" with its quotes) that
--                     each request replaces with a new integer id: requests in one MCP session
--                     must not reuse an id (the server routes answers by id), so the session
--                     workloads number their requests. Costs wrk a request string per request.
--
-- done() prints one line starting with "BENCH_JSON " followed by a JSON object; bench/run.py
-- parses it. Latencies are in microseconds (wrk's unit).

local request_file = assert(os.getenv("BENCH_REQUEST"), "BENCH_REQUEST is not set")
local path = os.getenv("BENCH_PATH") or "/mcp"
local count_status = os.getenv("BENCH_STATUS_CB") ~= "0"

local f = assert(io.open(request_file, "rb"))
local raw = f:read("*a")
f:close()
local sep = assert(raw:find("\n\n", 1, true), "request file: no empty line between headers and body")

wrk.method = "POST"
wrk.path = path
for line in raw:sub(1, sep - 1):gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    assert(name, "request file: bad header line " .. line)
    wrk.headers[name] = value
end
wrk.body = raw:sub(sep + 2)

local id_mark = os.getenv("BENCH_ID_MARK")
if id_mark and id_mark ~= "" then
    local at = assert(wrk.body:find(id_mark, 1, true), "BENCH_ID_MARK not in the body")
    local before, after = wrk.body:sub(1, at - 1), wrk.body:sub(at + #id_mark)
    local next_id = 0
    -- Ids unique across threads: setup() gives thread k the base k * 10^9.
    function init(args)
        non200 = 0
        statuses = {}
        next_id = id_base or 0
    end
    function request()
        next_id = next_id + 1
        return wrk.format(nil, nil, nil, before .. string.format("%d", next_id) .. after)
    end
end

-- One Lua state per wrk thread; setup() runs in the main state and keeps a handle on each.
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("id_base", #threads * 1000000000)
end

if not init then
    function init(args)
        non200 = 0
        statuses = {}
    end
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

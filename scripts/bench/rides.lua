-- wrk script: POST /api/v1/rides with a customer's bearer token (BENCH_TOKEN) and a JSON body
-- (BENCH_BODY), reporting one JSON line at the end.
--   BENCH_TOKEN=... BENCH_BODY='{"pickup":...}' wrk -t1 -c64 -d10s -s scripts/bench/rides.lua \
--       http://127.0.0.1:8000/api/v1/rides

local token = os.getenv("BENCH_TOKEN")
local body = os.getenv("BENCH_BODY")
if token == nil or token == "" or body == nil or body == "" then
  error("BENCH_TOKEN must hold a customer's access token and BENCH_BODY a ride request")
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

-- errors.status counts responses with a status above 399 (wrk's "Non-2xx or 3xx responses").
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

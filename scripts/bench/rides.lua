-- wrk script: POST /api/v1/rides with a customer's bearer token (BENCH_TOKEN) and a JSON body
-- (BENCH_BODY), reporting one JSON line at the end.
--   BENCH_TOKEN=... BENCH_BODY='{"pickup":...}' wrk -t1 -c64 -d10s -s scripts/bench/rides.lua \
--       http://127.0.0.1:8000/api/v1/rides

local token = os.getenv("BENCH_TOKEN")
local body = os.getenv("BENCH_BODY")
if token == nil or token == "" or body == nil or body == "" then
  error("BENCH_TOKEN must hold a customer's access token and BENCH_BODY a ride request")
end

-- the BENCH_RESULT line done() prints (bench_result.lua, next to this script)
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench_result = dofile(here .. "bench_result.lua")

wrk.method = "POST"
wrk.body = body
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

function done(summary, latency, requests)
  bench_result(summary, latency, "")
end

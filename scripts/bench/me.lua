-- wrk script: GET /api/v1/me with a bearer token (BENCH_TOKEN), reporting one JSON line at the end.
--   BENCH_TOKEN=... wrk -t2 -c64 -d10s -s scripts/bench/me.lua http://127.0.0.1:8000/api/v1/me

local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN must hold an access token")
end

-- the BENCH_RESULT line done() prints (bench_result.lua, next to this script)
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench_result = dofile(here .. "bench_result.lua")

wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Accept"] = "application/json"

function done(summary, latency, requests)
  bench_result(summary, latency, "")
end

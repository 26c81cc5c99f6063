-- The one line a bench's wrk script prints when the run ends (generators.WrkResult reads it):
--   BENCH_RESULT {"requests":..,"duration_us":..,"bytes":..,"errors":{..},"latency_us":{..}<extra>}
-- errors.status counts responses with a status above 399 (wrk's "Non-2xx or 3xx responses").
-- A script loads it next to itself and calls it from its done() callback:
--   local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
--   local bench_result = dofile(here .. "bench_result.lua")
--   function done(summary, latency, requests) bench_result(summary, latency, "") end
-- `extra` (a string starting with a comma) adds the script's own fields to the object.

local function or0(value)
  return value or 0
end

return function(summary, latency, extra)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}%s}\n',
    summary.requests, summary.duration, summary.bytes,
    or0(e.connect), or0(e.read), or0(e.write), or0(e.status), or0(e.timeout),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    extra or ""))
end

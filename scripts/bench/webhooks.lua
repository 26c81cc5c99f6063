-- wrk script: POST /webhooks/stripe with pre-signed Stripe events, reporting one JSON line at the end.
--   BENCH_EVENTS=/tmp/events.tsv BENCH_THREADS=1 wrk -t1 -c64 -d10s -s scripts/bench/webhooks.lua \
--       http://127.0.0.1:8000/webhooks/stripe
--
-- BENCH_EVENTS holds one event per line: the Stripe-Signature header, a tab, the JSON body (wrk's
-- Lua cannot compute an HMAC, so bench_webhooks.py signs them beforehand). Thread k of
-- BENCH_THREADS takes lines k+1, k+1+n, k+1+2n, ... and sends them in order, once each (all of a
-- thread's connections share its slice); only when
-- its slice runs out does it start over (counted as "wrapped": those repeats are duplicates).
-- Each thread counts its answers: 200 with "duplicate":false (stored), 200 with "duplicate":true,
-- 400, and anything else.

local path = os.getenv("BENCH_EVENTS")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
if path == nil or path == "" then
  error("BENCH_EVENTS must name the file of signed events")
end

-- the BENCH_RESULT line done() prints (bench_result.lua, next to this script), with the answers
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench_result = dofile(here .. "bench_result.lua")

-- main state: hand each thread its index, keep the threads to add up their counts in done()
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- thread state
local requests = {}
local count = 0
sent = 0
wrapped = 0
ok_new = 0
ok_duplicate = 0
bad_request = 0
other = 0

function init(args)
  local host = wrk.headers["Host"]
  local k = 0
  for line in io.lines(path) do
    if k % nthreads == tid then
      local tab = line:find("\t", 1, true)
      if tab == nil then
        error("a line of " .. path .. " has no tab")
      end
      local headers = {
        ["Host"] = host,
        ["Content-Type"] = "application/json; charset=utf-8",
        ["Accept"] = "*/*; q=0.5, application/xml",
        ["User-Agent"] = "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        ["Stripe-Signature"] = line:sub(1, tab - 1),
      }
      count = count + 1
      requests[count] = wrk.format("POST", nil, headers, line:sub(tab + 1))
    end
    k = k + 1
  end
  if count == 0 then
    error("thread " .. tid .. " got no events from " .. path)
  end
end

-- wrk 4.1 calls request() once on the first thread before any connection opens, to check the
-- request parses (script_verify_request); that call must not use up an event.
local verified = false

function request()
  if not verified and tid == 0 then
    verified = true
    return requests[1]
  end
  sent = sent + 1
  local i = (sent - 1) % count + 1
  if sent > count and i == 1 then
    wrapped = wrapped + 1
  end
  return requests[i]
end

function response(status, headers, body)
  if status == 200 then
    if body:find('"duplicate":%s*true') then
      ok_duplicate = ok_duplicate + 1
    else
      ok_new = ok_new + 1
    end
  elseif status == 400 then
    bad_request = bad_request + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local per_thread = {}
  local totals = {ok_new = 0, ok_duplicate = 0, bad_request = 0, other = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
    table.insert(per_thread, string.format('{"sent":%d,"wrapped":%d}', thread:get("sent"),
                                           thread:get("wrapped")))
  end
  bench_result(summary, latency, string.format(
    ',"answers":{"new":%d,"duplicate":%d,"bad_request":%d,"other":%d},"threads":[%s]',
    totals.ok_new, totals.ok_duplicate, totals.bad_request, totals.other, table.concat(per_thread, ",")))
end

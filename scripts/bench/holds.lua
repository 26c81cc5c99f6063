-- wrk script: POST /api/v1/bookings holding random slots of the benchmark's providers, reporting one
-- JSON line at the end with how many holds were won (201), refused (409) and anything else.
--   BENCH_TOKENS=t1,t2 BENCH_PROVIDERS=p1,p2 BENCH_BASE=1767225600 BENCH_DAYS=30 BENCH_SLOTS=95 \
--   BENCH_SLOT_S=900 wrk -t1 -c64 -d10s -s scripts/bench/holds.lua http://127.0.0.1:8000/api/v1/bookings

local function split(text)
  local items = {}
  for item in string.gmatch(text or "", "[^,]+") do
    items[#items + 1] = item
  end
  return items
end

local tokens = split(os.getenv("BENCH_TOKENS"))
local providers = split(os.getenv("BENCH_PROVIDERS"))
local base = tonumber(os.getenv("BENCH_BASE"))
local days = tonumber(os.getenv("BENCH_DAYS"))
local slots = tonumber(os.getenv("BENCH_SLOTS"))
local slot_s = tonumber(os.getenv("BENCH_SLOT_S"))
if #tokens == 0 or #providers == 0 or not base or not days or not slots or not slot_s then
  error("BENCH_TOKENS, BENCH_PROVIDERS, BENCH_BASE, BENCH_DAYS, BENCH_SLOTS and BENCH_SLOT_S are needed")
end

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench_result = dofile(here .. "bench_result.lua")

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter * 7919)
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(seed or 1)
  won, refused, other = 0, 0, 0
end

local function instant(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

function request()
  local provider = providers[math.random(#providers)]
  local day = math.random(days) - 1
  local slot = math.random(slots) - 1
  local start = base + day * 86400 + slot * slot_s
  local body = string.format('{"providerId":"%s","start":"%s","end":"%s","paymentMethod":"cash"}',
    provider, instant(start), instant(start + slot_s))
  local headers = {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
                   ["Content-Type"] = "application/json", ["Accept"] = "application/json"}
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status == 201 then
    won = won + 1
  elseif status == 409 then
    refused = refused + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local w, r, o = 0, 0, 0
  for _, thread in ipairs(threads) do
    w = w + (thread:get("won") or 0)
    r = r + (thread:get("refused") or 0)
    o = o + (thread:get("other") or 0)
  end
  bench_result(summary, latency, string.format(',"won":%d,"refused":%d,"other":%d', w, r, o))
end

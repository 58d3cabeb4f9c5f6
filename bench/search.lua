-- wrk script: the patient portal's lab search over random demo patients:
--   GET /fhir/Observation?patient=pt-XXXXX&category=laboratory&_count=50
--   PORTICO_ADMIN_TOKEN=... PATIENTS=1000 wrk -t2 -c16 -d20s --latency -s bench/search.lua http://127.0.0.1:PORT
-- (or pass them as script args: ... -- 1000 TOKEN)
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  patients = tonumber(args[1] or os.getenv("PATIENTS") or "1000")
  local token = args[2] or os.getenv("PORTICO_ADMIN_TOKEN")
  if token == nil or token == "" then
    error("set PORTICO_ADMIN_TOKEN (or pass it as the second script argument)")
  end
  math.randomseed((thread_no or 1) * 104729 + os.time())
  headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Accept"] = "application/fhir+json",
  }
end

function request()
  local id = string.format("pt-%05d", math.random(1, patients))
  return wrk.format("GET",
    "/fhir/Observation?patient=" .. id .. "&category=laboratory&_count=50", headers)
end

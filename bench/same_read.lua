-- wrk script: the same GET over and over with a given bearer token, so two runs that differ
-- only in the credential (admin token vs an OAuth access token) measure what authenticating
-- costs. Args: PATH TOKEN.
--   wrk -t2 -c16 -d15s --latency -s bench/same_read.lua http://127.0.0.1:PORT -- /fhir/Patient/pt-00001 TOKEN
function init(args)
  path = args[1] or "/fhir/Patient/pt-00001"
  local token = args[2]
  if token == nil or token == "" then
    error("pass PATH and TOKEN as script arguments")
  end
  headers = { ["Authorization"] = "Bearer " .. token, ["Accept"] = "application/fhir+json" }
end

function request()
  return wrk.format("GET", path, headers)
end

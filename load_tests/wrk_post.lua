-- wrk script: POSTs one fixed request body (read from a file, so binary bodies work) and prints
-- a machine-readable summary line. Configured by environment variables:
--   WRK_BODY              path of the request body file (required unless WRK_BODIES is set)
--   WRK_CONTENT_TYPE      Content-Type header (default application/json)
--   WRK_HEADER_LENGTH     Inference-Header-Content-Length (binary tensor extension), if set
--   WRK_BODIES            instead of WRK_BODY: a file of JSON bodies, one per line, sent in turn
wrk.method = "POST"
local bodies_path = os.getenv("WRK_BODIES")
if bodies_path and bodies_path ~= "" then
  local bodies = {}
  for line in io.lines(bodies_path) do bodies[#bodies + 1] = line end
  local next_index = 0
  request = function()
    next_index = next_index % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[next_index])
  end
else
  local body_path = assert(os.getenv("WRK_BODY"), "WRK_BODY must name the body file")
  local fh = assert(io.open(body_path, "rb"))
  wrk.body = fh:read("*a")
  fh:close()
end
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end

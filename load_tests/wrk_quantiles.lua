-- wrk script: wrk_post.lua's requests, and at the end the latency distribution as WRK_QUANTILES
-- lines: the latency (us) at each of WRK_QUANTILES (default 4000) evenly spaced probabilities,
-- (i - 0.5) / N, read from wrk's own per-request histogram (microsecond resolution).
dofile(os.getenv("WRK_POST_LUA"))

function done(summary, latency, requests)
  local n = tonumber(os.getenv("WRK_QUANTILES") or "4000")
  io.write(string.format("WRK_REQUESTS %d %d\n", summary.requests, summary.errors.status + summary.errors.timeout))
  for i = 1, n do
    io.write(string.format("WRK_QUANTILE %d\n", latency:percentile(100 * (i - 0.5) / n)))
  end
end

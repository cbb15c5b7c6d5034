-- Each request activates a new machine (a fresh hardware id) on one
-- license with room for all of them: the seat logic's cost under load.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("LICENSE_KEY")
local counter = 0
local thread_id = 0
setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local hw = string.format("%08x%08x%048x", thread_id, counter, 0)
  return wrk.format(nil, nil, nil,
    string.format('{"license_key":"%s","hardware_id":"%s"}', key, hw))
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT p50_ms=%.2f p99_ms=%.2f rps=%.0f requests=%d errors=%d non2xx=%d\n",
    latency:percentile(50)/1000, latency:percentile(99)/1000, summary.requests/(summary.duration/1e6),
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end

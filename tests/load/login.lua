wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"load@example.com","password":"correct horse battery"}'
done = function(summary, latency, requests)
  io.write(string.format("LOGIN p50_ms=%.2f p99_ms=%.2f rps=%.0f non2xx=%d\n",
    latency:percentile(50)/1000, latency:percentile(99)/1000, summary.requests/(summary.duration/1e6), summary.errors.status))
end

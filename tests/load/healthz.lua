done = function(summary, latency, requests)
  io.write(string.format("RESULT p50_ms=%.2f p99_ms=%.2f rps=%.0f errors=%d non2xx=%d\n",
    latency:percentile(50)/1000, latency:percentile(99)/1000, summary.requests/(summary.duration/1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end

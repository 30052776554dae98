-- Shared by every scenario: counts per-thread problems the script itself sees and prints one
-- machine-readable line ("BENCH_JSON {...}") that bench/run.py parses. Latencies are microseconds.
threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function read_lines(path)
  local out = {}
  local fh = assert(io.open(path, "r"))
  for line in fh:lines() do
    if line ~= "" then table.insert(out, line) end
  end
  fh:close()
  return out
end

function done(summary, latency, requests)
  local script_errors = 0
  for _, t in ipairs(threads) do
    script_errors = script_errors + (tonumber(t:get("script_errors")) or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"script_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    script_errors, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end

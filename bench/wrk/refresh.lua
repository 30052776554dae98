-- POST /token grant_type=refresh_token with rotation: no refresh token is ever sent twice.
-- Each wrk thread takes its own share of the pre-minted tokens in BENCH_TOKENS_FILE (line i goes to
-- thread (i-1) % BENCH_THREADS). wrk calls response() for a connection before it builds that
-- connection's next request, so the rotated token from each answer goes on a per-thread queue and
-- the next request takes it: every connection walks its own refresh-token chain. A failed refresh
-- breaks that chain; a spare pre-minted token replaces it (counted as a script error). With no
-- spare left the request is sent with a dead token and fails (a status error).
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local queue, head, tail, script_errors = {}, 1, 0, 0

function init(args)
  local all = read_lines(os.getenv("BENCH_TOKENS_FILE"))
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  for n, token in ipairs(all) do
    if (n - 1) % nthreads == tid then
      tail = tail + 1
      queue[tail] = token
    end
  end
end

function request()
  local token = "exhausted-pool"
  if head <= tail then
    token = queue[head]
    queue[head] = nil
    head = head + 1
  end
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = os.getenv("BENCH_AUTH"),
  }, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local rotated = status == 200 and body:match('"refresh_token":%s*"([^"]+)"')
  if rotated then
    -- the answer's token jumps the queue so spares stay spare
    head = head - 1
    queue[head] = rotated
  else
    script_errors = script_errors + 1
    wrk.thread:set("script_errors", script_errors)
  end
end

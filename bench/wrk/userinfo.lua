-- GET /userinfo with bearer access tokens taken round-robin from BENCH_TOKENS_FILE.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local tokens, i = {}, 0

function init(args)
  tokens = read_lines(os.getenv("BENCH_TOKENS_FILE"))
  i = tid or 0
end

function request()
  i = i % #tokens + 1
  return wrk.format("GET", nil, {["Authorization"] = "Bearer " .. tokens[i]}, nil)
end

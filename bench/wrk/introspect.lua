-- POST /introspect for access tokens taken round-robin from BENCH_TOKENS_FILE (one per line),
-- authenticated as the client the tokens were issued to (BENCH_AUTH). Every answer must say active.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local tokens, i, script_errors = {}, 0, 0

function init(args)
  tokens = read_lines(os.getenv("BENCH_TOKENS_FILE"))
  i = tid or 0
end

function request()
  i = i % #tokens + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = os.getenv("BENCH_AUTH"),
  }, "token=" .. tokens[i] .. "&token_type_hint=access_token")
end

function response(status, headers, body)
  if status == 200 and not body:find('"active":%s*true') then
    script_errors = script_errors + 1
    wrk.thread:set("script_errors", script_errors)
  end
end

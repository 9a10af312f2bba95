-- Registration with a unique email per request: bench-$BENCH_RUN_ID-<thread>-<n>@example.com,
-- password $BENCH_PASSWORD (passes the policy; contains no local part).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local run_id = os.getenv("BENCH_RUN_ID") or "run"
local password = os.getenv("BENCH_PASSWORD") or ""
local headers = { ["Content-Type"] = "application/json" }
local sent = 0

function request()
   sent = sent + 1
   local email = string.format("bench-%s-%d-%d@example.com", run_id, id or 0, sent)
   local body = '{"email":"' .. email .. '","password":"' .. password .. '"}'
   return wrk.format("POST", "/api/auth/register", headers, body)
end

function response(status, headers, body)
   common.count(status, body)
end

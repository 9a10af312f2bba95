-- The same request over and over: $BENCH_METHOD $BENCH_PATH, optional JSON $BENCH_BODY and
-- bearer token $BENCH_BEARER. Used for the ceilings, GET /me and login with a known user.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end
local bearer = os.getenv("BENCH_BEARER")
if bearer and bearer ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. bearer
end

function response(status, headers, body)
   common.count(status, body)
end

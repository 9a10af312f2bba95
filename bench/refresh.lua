-- Refresh chains: every request spends a live refresh token and the successor from its
-- response is the next one presented for that session, so each request really rotates.
--
-- $BENCH_TOKENS_FILE holds one live refresh token per session; thread `id` takes every
-- $BENCH_WRK_THREADS-th line. wrk's Lua API does not say which connection a callback
-- belongs to, so a thread keeps its sessions' live tokens in a FIFO: a request takes one,
-- its response puts the successor back. Each connection has at most one request in flight
-- and every 200 returns exactly one token, so with at least one session per connection a
-- connection about to send always finds one, and no token is ever presented twice.
-- The runner makes one spare session per thread: wrk calls request() once on the first
-- thread's state to check the script, and that request is never sent.
-- A chain that breaks (non-2xx) is gone; requests that then find no live token are sent
-- with a dead one, fail with 401 and are counted (non-2xx, "starved"): a broken run cannot
-- look good.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local live, first, last = {}, 1, 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   local threads = tonumber(os.getenv("BENCH_WRK_THREADS"))
   local n = 0
   for line in io.lines(os.getenv("BENCH_TOKENS_FILE")) do
      if line ~= "" then
         if n % threads == id then
            last = last + 1
            live[last] = line
         end
         n = n + 1
      end
   end
end

function request()
   local token = "no-live-refresh-token-left"
   if first <= last then
      token = live[first]
      live[first] = nil
      first = first + 1
   else
      starved = starved + 1
   end
   return wrk.format("POST", "/api/auth/refresh", headers, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
   common.count(status, body)
   if status == 200 then
      local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
      if token then
         last = last + 1
         live[last] = token
      end
   end
end

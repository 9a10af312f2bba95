-- Shared by the scenario scripts (loaded with require): thread ids, non-2xx counting, and a
-- JSON summary written to $BENCH_RESULT_FILE for the Python runner.
local common = {}
local threads = {}

-- Per-thread counters are globals so that done() (in wrk's main Lua state) can read them
-- with thread:get().
non2xx = 0
starved = 0
first_failure = ""

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function common.count(status, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_failure == "" then
         first_failure = status .. " " .. (body or ""):sub(1, 300)
      end
   end
end

local function json_string(text)
   return '"' .. text:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
   end) .. '"'
end

function done(summary, latency, requests)
   local bad, hungry, failure = 0, 0, ""
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("non2xx") or 0)
      hungry = hungry + (thread:get("starved") or 0)
      if failure == "" then
         failure = thread:get("first_failure") or ""
      end
   end
   local e = summary.errors
   local out = assert(io.open(os.getenv("BENCH_RESULT_FILE"), "w"))
   out:write(string.format(
      '{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
         .. '"max_us": %d, "mean_us": %.1f, "non2xx": %d, "starved": %d, '
         .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
         .. '"first_failure": %s}\n',
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, bad, hungry,
      e.connect, e.read, e.write, e.timeout, json_string(failure)))
   out:close()
end

return common

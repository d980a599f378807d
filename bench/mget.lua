-- wrk script: every request is POST /mget with the same body of keys.
-- bench/run.py writes the body to a file and passes its path and the API key by environment:
--   DISTCACHE_DEV_BENCH_BODY=/path/to/body.json DISTCACHE_DEV_BENCH_API_KEY=... wrk -s mget.lua URL
local path = os.getenv("DISTCACHE_DEV_BENCH_BODY")
local file = assert(io.open(path, "rb"), "cannot open DISTCACHE_DEV_BENCH_BODY " .. tostring(path))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("DISTCACHE_DEV_BENCH_API_KEY") or ""

-- wrk script for bench/flood_envoy.sh: the valid traffic, spread over 10 000 clients
-- (X-Forwarded-For 198.18.0.1 .. 198.18.39.250, the RFC 2544 benchmarking range), so that each
-- one stays far below the per-client limit.
local n = 0
request = function()
  n = n + 1
  local i = n % 10000
  wrk.headers["x-forwarded-for"] = "198.18." .. math.floor(i / 250) .. "." .. (i % 250 + 1)
  return wrk.format()
end

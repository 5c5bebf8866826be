-- wrk script for bench/flood_envoy.sh: one client (X-Forwarded-For 198.19.0.66) sending a fresh
-- wrong secret for a real key id on every request (tokens from the file given after `--`),
-- each connection pausing the milliseconds given second after `--` between requests, so the
-- flood offers about the same rate whether its answers are slow (Checks) or fast (429s).
local tokens = {}
local n = 0
local pause = 0
init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  n = math.random(#tokens)
  pause = tonumber(args[2] or "0")
end
delay = function()
  return pause
end
request = function()
  n = n + 1
  wrk.headers["x-api-key"] = tokens[n % #tokens + 1]
  wrk.headers["x-forwarded-for"] = "198.19.0.66"
  return wrk.format()
end

-- Checkouts: each customer's cart once, with a key of its own (run for less time than it
-- takes to go through every customer, or later requests replay recorded answers).
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local body = '{"delivery_address":{"text":"Alexanderplatz 1, Berlin","lat":52.5219,"lng":13.4132},"payment_method":"simulated"}'
local i = 0
request = function()
  i = i + 1
  local n = (i - 1) % #tokens + 1
  return wrk.format("POST", "/api/v1/checkout",
    { ["Authorization"] = "Bearer " .. tokens[n], ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "bench-" .. n }, body)
end
created, other = 0, 0
response = function(status, headers, body)
  if status == 201 then created = created + 1 else other = other + 1 end
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("checkouts: %d created (201), %d other answers\n", t:get("created"), t:get("other")))
  end
end

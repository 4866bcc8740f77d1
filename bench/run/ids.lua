-- GET /api/v1/products/{id} for wrk, cycling over the ids in the file named by IDS_FILE (one
-- per line), the same on hexmarket and on the peer.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do
  ids[#ids + 1] = line
end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v1/products/" .. ids[(i % #ids) + 1])
end

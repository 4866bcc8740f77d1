-- Cart adds: one unit of a product into a customer's cart, customers and products round-robin
-- (each request is a durable write of one cart actor).
local tokens, products = {}, {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
for line in io.lines(os.getenv("PRODUCTS")) do products[#products + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/api/v1/cart/items",
    { ["Authorization"] = "Bearer " .. tokens[(i - 1) % #tokens + 1],
      ["Content-Type"] = "application/json" },
    '{"product_id":"' .. products[(i - 1) % #products + 1] .. '","quantity":1}')
end

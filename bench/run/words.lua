-- Plain text searches for wrk, the same on hexmarket and on the peer: one word each, picked
-- round-robin so every run sends the same mix.
local words = { "pizza", "curry", "apples", "vegan", "croissant", "espresso", "tulips", "smoothie" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v1/products?q=" .. words[(i % #words) + 1])
end

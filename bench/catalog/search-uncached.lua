-- The search mix of search.lua, each request made unique by a `max_price` bound no product
-- reaches, so no answer comes from the result cache: this measures the engine itself.
local queries = {
  "/api/v1/products?q=pizza",
  "/api/v1/products?q=piza+margherita",
  "/api/v1/products?q=chicken+curry&in_stock=true",
  "/api/v1/products?q=chiken&sort=price_asc",
  "/api/v1/products?q=organic+apples&max_price=400",
  "/api/v1/products?q=vegan&sort=rating",
  "/api/v1/products?q=croissant&near=52.52,13.41&radius_km=3",
  "/api/v1/products?sort=popular&limit=20",
  "/api/v1/products?q=espresso+beans&min_price=500",
  "/api/v1/products?q=tulips&sort=newest",
  "/api/v1/products?in_stock=true&near=52.50,13.38&radius_km=2&sort=price_desc",
  "/api/v1/products?q=smoothie&limit=50",
}
local i = 0
request = function()
  i = i + 1
  local sep = string.find(queries[(i % #queries) + 1], "?") and "&" or "?"
  return wrk.format("GET", queries[(i % #queries) + 1] .. sep .. "max_price=" .. (1000000000 + i))
end

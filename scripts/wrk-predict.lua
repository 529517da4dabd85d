-- wrk-predict.lua - wrk posts one Fashion-MNIST-sized predict request
-- (TensorFlow Serving's JSON row format) on every request, and counts
-- answers that are not 200 (wrk's "Non-2xx" line says the same).
--   wrk -t2 -c64 -d60s -s scripts/wrk-predict.lua https://HOST:PORT
-- WRK_MODEL (default "model") names the model; WRK_BODY a file whose bytes
-- are the body instead, sent as raw uint8 pixels (octet-stream) when
-- WRK_TYPE is "raw".
local model = os.getenv("WRK_MODEL") or "model"
local body_file = os.getenv("WRK_BODY")
local body
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
else
  local px = {}
  for i = 1, 784 do px[i] = string.format("%.4f", ((i * 37) % 256) / 255) end
  body = '{"instances": [[' .. table.concat(px, ",") .. ']]}'
end
wrk.method = "POST"
wrk.path = "/v1/models/" .. model .. ":predict"
if os.getenv("WRK_TYPE") == "raw" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["X-Tensor-Dtype"] = "uint8"
else
  wrk.headers["Content-Type"] = "application/json"
end
wrk.body = body

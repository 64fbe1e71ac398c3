-- wrk script: signed push deliveries, each with its own delivery id and its own body, as
-- the forge BENCH_FORGE sends them: "github" (the default; X-Hub-Signature-256), "gitea"
-- (the same HMAC as bare hex in X-Gitea-Signature) or "gitlab" (the secret itself in
-- X-Gitlab-Token, nothing hashed). The runner answers a body it has recorded before as a duplicate whatever its
-- delivery id, so each request ends the push with a nonce of its own and is signed here
-- (HMAC-SHA256 with BENCH_SECRET). The key block and the body's fixed start are hashed
-- once per thread; a request hashes only the last blocks.
-- The body comes from the file BENCH_BODY; BENCH_SIGNATURE is its signature as written,
-- which each thread checks its HMAC against before it sends anything.
local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit, tohex = bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
local W = {}

local function initial()
  return { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
end

-- compress(H, data, at): the 64-byte block of data starting at byte `at` into state H.
local function compress(H, data, at)
  for i = 0, 15 do
    local a, b, c, d = data:byte(at + i * 4, at + i * 4 + 3)
    W[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  for i = 16, 63 do
    local x, y = W[i - 15], W[i - 2]
    local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
    local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
    W[i] = tobit(W[i - 16] + s0 + W[i - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for i = 0, 63 do
    local s1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = tobit(h + s1 + ch + K[i + 1] + W[i])
    local s0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + s0 + maj)
  end
  H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
  H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

-- absorb(H, data): data's whole blocks into H; returns what is left over (under 64 bytes).
local function absorb(H, data)
  local whole = #data - #data % 64
  for at = 1, whole, 64 do compress(H, data, at) end
  return data:sub(whole + 1)
end

-- finish(H, tail, total): the digest (32 bytes) of a message of `total` bytes whose
-- whole blocks before `tail` are already in H (a copy of H is used).
local function finish(H, tail, total)
  local state = { H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8] }
  -- The length in bits, big-endian in 8 bytes: its high 4 are 0 below 512 MB.
  local bits = total * 8
  local padded = tail .. "\128" .. string.rep("\0", (55 - #tail) % 64)
    .. string.char(0, 0, 0, 0, band(rshift(bits, 24), 0xff), band(rshift(bits, 16), 0xff),
      band(rshift(bits, 8), 0xff), band(bits, 0xff))
  absorb(state, padded)
  local out = {}
  for i = 1, 8 do
    local v = state[i]
    out[i] = string.char(band(rshift(v, 24), 0xff), band(rshift(v, 16), 0xff), band(rshift(v, 8), 0xff), band(v, 0xff))
  end
  return table.concat(out)
end

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- A keyed hasher: its inner state after the key block and `start` (the fixed beginning of
-- every message), and its outer state after the key block.
local function keyed(secret, start)
  assert(#secret <= 64, "BENCH_SECRET longer than a block")
  local key = secret .. string.rep("\0", 64 - #secret)
  local ipad = key:gsub(".", function(c) return string.char(bxor(c:byte(), 0x36)) end)
  local opad = key:gsub(".", function(c) return string.char(bxor(c:byte(), 0x5c)) end)
  local inner, outer = initial(), initial()
  compress(inner, ipad, 1)
  compress(outer, opad, 1)
  local rest = absorb(inner, start)
  return function(ending)
    local digest = finish(inner, rest .. ending, 64 + #start + #ending)
    return "sha256=" .. hex(finish(outer, digest, 64 + 32))
  end
end

local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  local written = file:read("*a")
  file:close()
  local secret = os.getenv("BENCH_SECRET")
  local check = keyed(secret, "")
  assert(check(written) == os.getenv("BENCH_SIGNATURE"), "ingest.lua: the HMAC-SHA256 here differs from BENCH_SIGNATURE")
  -- The body without its closing brace, then a nonce field: `,"bench_nonce":"...."}`.
  start = written:gsub("%s*}%s*$", "") .. ',"bench_nonce":"'
  sign = keyed(secret, start)
  prefix = os.getenv("BENCH_PREFIX")
  forge = os.getenv("BENCH_FORGE") or "github"
  secret_text = secret
  counter = 0
  accepted = 0
end

function request()
  counter = counter + 1
  local nonce = string.format("%s-%d-%d", prefix, tid, counter)
  local ending = nonce .. '"}'
  local headers, path
  if forge == "gitea" then
    headers = {
      ["Content-Type"] = "application/json",
      ["X-Gitea-Event"] = "push",
      ["X-Gitea-Delivery"] = nonce,
      ["X-Gitea-Signature"] = sign(ending):sub(8),
    }
    path = "/webhooks/gitea"
  elseif forge == "gitlab" then
    headers = {
      ["Content-Type"] = "application/json",
      ["X-Gitlab-Event"] = "Push Hook",
      ["Idempotency-Key"] = nonce,
      ["X-Gitlab-Token"] = secret_text,
    }
    path = "/webhooks/gitlab"
  else
    headers = {
      ["Content-Type"] = "application/json",
      ["X-GitHub-Event"] = "push",
      ["X-GitHub-Delivery"] = nonce,
      ["X-Hub-Signature-256"] = sign(ending),
    }
    path = "/webhooks/github"
  end
  return wrk.format("POST", path, headers, start .. ending)
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("accepted")
  end
  io.write(string.format("accepted_202: %d\n", total))
end

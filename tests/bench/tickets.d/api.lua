-- wrk script of tests/bench/tickets (and tests/bench/webhooks).
--   wrk ... -s api.lua URL -- create TOKEN CUSTOMERS   POST a ticket (201 expected)
--   wrk ... -s api.lua URL -- list TOKEN               GET the URL (200 expected)
--   wrk ... -s api.lua URL -- signed FILE              POST the pre-signed webhooks of FILE
--                                                      in order (200 expected); FILE has one
--                                                      a line: X-Hub-Signature-256, tab, body
-- The ticket's customer is cust<random 1..CUSTOMERS>@example.com, so new and
-- existing customers both occur.  Responses with another status are counted
-- per status; done() prints, for the benchmark to parse:
--   bench-responses N, bench-expected N, bench-unexpected N,
--   bench-status CODE N (one line per unexpected status),
--   bench-first-unexpected CODE BODY (the first such body, truncated),
--   bench-wrapped N (signed: requests sent after FILE ran out, i.e. repeats).

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

local mode, token, customers, headers
local counter = 0
local want = 201
local sigs, bodies = {}, {}
unexpected = 0
expected = 0
wrapped = 0
codes = {}
first = ""

function init(args)
    mode = args[1] or "create"
    token = args[2] or ""
    customers = tonumber(args[3] or "1000") or 1000
    want = (mode == "create") and 201 or 200
    if mode == "signed" then
        for line in io.lines(token) do    -- args[2] is the file here
            local tab = string.find(line, "\t", 1, true)
            table.insert(sigs, string.sub(line, 1, tab - 1))
            table.insert(bodies, string.sub(line, tab + 1))
        end
        return
    end
    headers = { ["Authorization"] = "Bearer " .. token }
    if mode == "create" then
        headers["Content-Type"] = "application/json"
    end
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
    if mode == "signed" then
        counter = counter + 1
        if counter > #bodies then
            wrapped = wrapped + 1
            counter = 1
        end
        return wrk.format("POST", nil, { ["Content-Type"] = "application/json",
                                         ["X-Hub-Signature-256"] = sigs[counter] },
                          bodies[counter])
    end
    if mode ~= "create" then
        return wrk.format("GET", nil, headers, nil)
    end
    counter = counter + 1
    local body = string.format(
        '{"subject":"Printer broken %d","customer":{"email":"cust%d@example.com","name":"Customer"},'
            .. '"message":{"text":"It does not print after the update"},'
            .. '"priority":"normal","tags":["bench"]}',
        counter, math.random(1, customers))
    return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
    if status == want then
        expected = expected + 1
        return
    end
    unexpected = unexpected + 1
    local k = tostring(status)
    codes[k] = (codes[k] or 0) + 1
    if first == "" then
        first = k .. " " .. string.sub(string.gsub(body or "", "%s+", " "), 1, 300)
    end
end

function done(summary, latency, requests)
    local exp, unexp, wrap, firsts, bycode = 0, 0, 0, "", {}
    for _, t in ipairs(threads) do
        exp = exp + (t:get("expected") or 0)
        unexp = unexp + (t:get("unexpected") or 0)
        wrap = wrap + (t:get("wrapped") or 0)
        local c = t:get("codes") or {}
        for k, v in pairs(c) do
            bycode[k] = (bycode[k] or 0) + v
        end
        local f = t:get("first") or ""
        if firsts == "" then
            firsts = f
        end
    end
    io.write(string.format("bench-responses %d\n", summary.requests))
    io.write(string.format("bench-duration-us %d\n", summary.duration))
    io.write(string.format("bench-expected %d\n", exp))
    io.write(string.format("bench-unexpected %d\n", unexp))
    io.write(string.format("bench-wrapped %d\n", wrap))
    for k, v in pairs(bycode) do
        io.write(string.format("bench-status %s %d\n", k, v))
    end
    if firsts ~= "" then
        io.write("bench-first-unexpected " .. firsts .. "\n")
    end
end

-- prelude.lua - the host side of a tenant's rules, run in the sandbox's
-- own environment before any script: the words rule authors write
-- (calendar, sla, template, on, act.*), the SLA clock, and dispatch.
--
-- Scripts never see this environment: they run in a separate one that
-- holds only safe libraries and the words below.  The C side (sandbox.c)
-- provides the calendar arithmetic (cal_new, cal_add, cal_between,
-- duration) and runs every piece of user code in a coroutine under the
-- instruction budget.  Nothing here does I/O: what handlers decide comes
-- back as data for the host to validate and apply.

local C = ...

local R = {}

local calendars = {}    -- name -> {name, cal (userdata), tz}
local slas = {}         -- in declaration order: {name, match, targets..., script}
local sla_by_name = {}
local templates = {}    -- name -> {text, html}
local handlers = {}     -- event -> list of {fn, script, line}
local current_script = "?"

local EVENTS = {
    ["ticket.created"] = true, ["message.received"] = true, ["message.sent"] = true,
    ["ticket.updated"] = true, ["ticket.assigned"] = true, ["sla.warning"] = true,
    ["sla.breached"] = true, ["ticket.solved"] = true, ["ticket.reopened"] = true,
    ["feedback.received"] = true, ["agent.away"] = true,
}
local STATUSES = { new = true, open = true, pending = true, on_hold = true, solved = true, closed = true }
local PRIORITIES = { low = true, normal = true, high = true, urgent = true }
local STRATEGIES = { least_loaded = true, round_robin = true }
local COMP_KINDS = { discount = true, credit = true, refund = true, gift = true, bonus = true }
local IDENTITY_KINDS = { email = true, phone = true, chat = true, telegram = true, whatsapp = true,
                         messenger = true, instagram = true, sms = true, other = true }
local TARGETS = { "first_response", "next_response", "resolution" }
local DAYS = { mon = 0, tue = 1, wed = 2, thu = 3, fri = 4, sat = 5, sun = 6 }

-- The caller's place in a script, for messages: "sla.lua:12".
local function where(level)
    local info = debug.getinfo(level + 1, "Sl")
    if info and info.currentline and info.currentline > 0 then
        return info.short_src, info.currentline
    end
    return current_script, nil
end

local function fail(level, fmt, ...)
    error(string.format(fmt, ...), level + 1)
end

local function check_duration(v, what, level)
    if type(v) == "number" and v >= 0 and v == math.floor(v) then
        return v
    end
    local secs = type(v) == "string" and C.duration(v)
    if not secs then
        fail(level + 1, "%s: invalid duration %s (write e.g. \"30m\", \"4h\", \"2d\")", what,
             type(v) == "string" and string.format("%q", v) or type(v))
    end
    return secs
end

-- ======================== read-only views ========================

local views = setmetatable({}, { __mode = "k" })

local function readonly(t)
    if type(t) ~= "table" then
        return t
    end
    local proxy = {}
    local mt = {
        __index = function(_, k) return readonly(t[k]) end,
        __newindex = function() error("event data is read-only: record changes on act", 2) end,
        __len = function() return #t end,
        __pairs = function()
            return function(_, k)
                local nk, nv = next(t, k)
                return nk, readonly(nv)
            end, proxy, nil
        end,
        __metatable = false,
    }
    setmetatable(proxy, mt)
    views[proxy] = t
    return proxy
end

-- ======================== declarations ========================

local function calendar(name)
    if type(name) ~= "string" or not name:match("^[%a_][%w_%-]*$") then
        fail(2, "calendar: the name must be a word, e.g. calendar \"office\" { ... }")
    end
    return function(def)
        if type(def) ~= "table" then
            fail(2, "calendar \"%s\": expected a table of settings", name)
        end
        if calendars[name] then
            fail(2, "calendar \"%s\" is declared twice", name)
        end
        for k in pairs(def) do
            if k ~= "tz" and k ~= "hours" and k ~= "holidays" then
                fail(2, "calendar \"%s\": unknown setting \"%s\"", name, tostring(k))
            end
        end
        local hours = {}
        for day, span in pairs(def.hours or {}) do
            local wd = DAYS[day]
            if not wd then
                fail(2, "calendar \"%s\": unknown day \"%s\" (use mon .. sun)", name, tostring(day))
            end
            if type(span) ~= "table" then
                fail(2, "calendar \"%s\": hours.%s must be {\"09:00\", \"18:00\"}", name, day)
            end
            local list = type(span[1]) == "table" and span or { span }
            for _, iv in ipairs(list) do
                hours[#hours + 1] = { wd, iv[1], iv[2] }
            end
        end
        local cal, err = C.cal_new(def.tz or "UTC", hours, def.holidays or {})
        if not cal then
            fail(2, "calendar \"%s\": %s", name, err)
        end
        calendars[name] = { name = name, cal = cal, tz = def.tz or "UTC" }
    end
end

local function sla(name)
    if type(name) ~= "string" or not name:match("^[%a_][%w_%-]*$") then
        fail(2, "sla: the name must be a word, e.g. sla \"gold\" { ... }")
    end
    return function(def)
        if type(def) ~= "table" then
            fail(2, "sla \"%s\": expected a table of settings", name)
        end
        if sla_by_name[name] then
            fail(2, "sla \"%s\" is declared twice", name)
        end
        if def.match ~= nil and type(def.match) ~= "function" then
            fail(2, "sla \"%s\": match must be a function(ticket)", name)
        end
        local p = { name = name, match = def.match, calendar = def.calendar, script = current_script,
                    pause = {}, targets = {} }
        local _, line = where(2)
        p.line = line
        for _, target in ipairs(TARGETS) do
            if def[target] ~= nil then
                p.targets[target] = check_duration(def[target], "sla \"" .. name .. "\" " .. target, 2)
            end
        end
        if def.warn_before ~= nil then
            p.warn = check_duration(def.warn_before, "sla \"" .. name .. "\" warn_before", 2)
        end
        for _, st in ipairs(def.pause_when or {}) do
            if not STATUSES[st] then
                fail(2, "sla \"%s\": pause_when has an unknown status \"%s\"", name, tostring(st))
            end
            p.pause[st] = true
        end
        for k in pairs(def) do
            if not (k == "match" or k == "calendar" or k == "warn_before" or k == "pause_when"
                    or k == "first_response" or k == "next_response" or k == "resolution") then
                fail(2, "sla \"%s\": unknown setting \"%s\"", name, tostring(k))
            end
        end
        slas[#slas + 1] = p
        sla_by_name[name] = p
    end
end

local function template(name)
    if type(name) ~= "string" or not name:match("^[%a_][%w_%-]*$") then
        fail(2, "template: the name must be a word, e.g. template \"ack\" [[ ... ]]")
    end
    return function(def)
        if type(def) == "string" then
            def = { text = def }
        end
        if type(def) ~= "table" or type(def.text) ~= "string" then
            fail(2, "template \"%s\": expected text, or { text = ..., html = ... }", name)
        end
        if templates[name] then
            fail(2, "template \"%s\" is declared twice", name)
        end
        templates[name] = { text = def.text, html = def.html }
    end
end

local function on(event, fn)
    if type(event) ~= "string" or not (EVENTS[event] or event:match("^timer%.[a-z][a-z0-9_]*$")) then
        fail(2, "on: unknown event %s", type(event) == "string" and string.format("%q", event) or type(event))
    end
    if type(fn) ~= "function" then
        fail(2, "on(\"%s\", ...): the handler must be a function(ev, act)", event)
    end
    local list = handlers[event] or {}
    handlers[event] = list
    list[#list + 1] = { fn = fn, script = current_script, line = debug.getinfo(fn, "S").linedefined }
end

-- ======================== actions ========================

local HTML_ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                       ["'"] = "&#39;" }

-- Fills {{ticket.number}}-style placeholders from the event; in HTML the
-- values are escaped (a customer's name is data, not markup).
local function render(text, ev, html)
    return (text:gsub("{{%s*([%w_%.]+)%s*}}", function(path)
        local v = ev
        for part in path:gmatch("[^%.]+") do
            if type(v) ~= "table" then
                return ""
            end
            v = v[part]
        end
        if v == nil or type(v) == "table" then
            return ""
        end
        if html then
            return (tostring(v):gsub("[&<>\"']", HTML_ESCAPES))
        end
        return tostring(v)
    end))
end

local function one_of(set, v, what)
    if not set[v] then
        fail(4, "%s: unknown value %s", what, type(v) == "string" and string.format("%q", v) or tostring(v))
    end
    return v
end

local function str(v, what, max)
    if type(v) ~= "string" or #v == 0 or #v > (max or 2000) then
        fail(4, "%s must be a non-empty string of at most %d bytes", what, max or 2000)
    end
    return v
end

local function list_of_strings(v, what)
    if type(v) == "string" then
        return { v }
    end
    if type(v) ~= "table" or #v == 0 then
        fail(4, "%s must be a string or a list of strings", what)
    end
    local out = {}
    for i, s in ipairs(v) do
        out[i] = str(s, what, 100)
    end
    return out
end

local function table_arg(a, name)
    if type(a) ~= "table" then
        fail(4, "act.%s expects a table, e.g. act.%s{ ... }", name, name)
    end
    return a
end

local function notify_args(a, what)
    local out = {}
    if type(a) == "string" then
        a = a == "admins" and { admins = true } or a == "assignee" and { assignee = true }
            or a == "supervisors" and { supervisors = true } or { team = a }
    end
    a = table_arg(a, what)
    if a.agents ~= nil then out.agents = list_of_strings(a.agents, what .. ".agents") end
    if a.team ~= nil then out.team = str(a.team, what .. ".team", 200) end
    if a.admins then out.admins = true end
    if a.supervisors then out.supervisors = true end
    if a.assignee then out.assignee = true end
    if a.webhook ~= nil then
        out.webhook = str(a.webhook, what .. ".webhook", 2000)
        if not out.webhook:match("^https?://") then
            fail(4, "%s.webhook must be an http:// or https:// URL", what)
        end
    end
    if a.text ~= nil then out.text = str(a.text, what .. ".text") end
    if next(out) == nil or (next(out) == "text" and next(out, "text") == nil) then
        fail(4, "%s: say whom to notify (agents, team, admins, supervisors, assignee or webhook)", what)
    end
    return out
end

local function assign_args(a, what, out)
    if a.agent ~= nil then out.agent = str(tostring(a.agent), what .. ".agent", 254) end
    if a.team ~= nil then out.team = str(a.team, what .. ".team", 200) end
    if a.strategy ~= nil then out.strategy = one_of(STRATEGIES, a.strategy, what .. ".strategy") end
    return out
end

-- Each builder checks its arguments (an error names the script line) and
-- returns the action as data.
local BUILD = {}
function BUILD.set_priority(a)
    if type(a) == "table" then a = a.priority end
    return { priority = one_of(PRIORITIES, a, "act.set_priority") }
end
function BUILD.set_status(a)
    if type(a) == "table" then a = a.status end
    return { status = one_of(STATUSES, a, "act.set_status") }
end
function BUILD.assign(a)
    if type(a) == "string" then a = { agent = a } end
    a = table_arg(a, "assign")
    local out = assign_args(a, "act.assign", {})
    if not out.agent and not out.team then
        fail(3, "act.assign needs an agent or a team")
    end
    return out
end
function BUILD.tag(a) return { tags = list_of_strings(a, "act.tag") } end
function BUILD.untag(a) return { tags = list_of_strings(a, "act.untag") } end
function BUILD.escalate(a, ev)
    a = table_arg(a, "escalate")
    local level = a.level
    if level == nil then
        level = (ev.ticket and ev.ticket.escalation_level or 0) + 1
    end
    if math.type(level) ~= "integer" or level < 1 or level > 100 then
        fail(3, "act.escalate: level must be an integer from 1 to 100")
    end
    local out = assign_args(a, "act.escalate", { level = level })
    if a.priority ~= nil then out.priority = one_of(PRIORITIES, a.priority, "act.escalate.priority") end
    if a.notify ~= nil then out.notify = notify_args(a.notify, "act.escalate.notify") end
    return out
end
local function message_args(a, ev, what)
    if type(a) == "string" then a = { text = a } end
    a = table_arg(a, what)
    local text, html = a.text, a.html
    if a.template ~= nil then
        local t = templates[a.template]
        if not t then
            fail(3, "act.%s: no template named %s", what, string.format("%q", tostring(a.template)))
        end
        text, html = t.text, t.html
    end
    if type(text) ~= "string" or #text == 0 then
        fail(3, "act.%s needs text or a template", what)
    end
    local out = { text = render(text, ev) }
    if html then out.html = render(html, ev, true) end
    if #out.text > 100000 then
        fail(3, "act.%s: the text is longer than 100000 bytes", what)
    end
    return out
end
function BUILD.reply(a, ev) return message_args(a, ev, "reply") end
function BUILD.note(a, ev) return message_args(a, ev, "note") end
function BUILD.notify(a) return notify_args(a, "act.notify") end
function BUILD.compensate(a)
    a = table_arg(a, "compensate")
    local out = { kind = one_of(COMP_KINDS, a.kind, "act.compensate.kind") }
    if a.amount ~= nil then
        if type(a.amount) ~= "number" or a.amount <= 0 or a.amount > 1e9 then
            fail(3, "act.compensate: amount must be a positive number")
        end
        if type(a.currency) ~= "string" or not a.currency:match("^%u%u%u$") then
            fail(3, "act.compensate: an amount needs a currency (three capital letters, e.g. \"EUR\")")
        end
        -- Money is kept to the cent, as the ledger does.
        local cents = math.floor(a.amount * 100 + 0.5)
        out.amount = cents % 100 == 0 and cents // 100 or cents / 100
        out.currency = a.currency
    elseif a.description == nil then
        fail(3, "act.compensate needs an amount and currency, or a description")
    end
    if a.description ~= nil then out.description = str(a.description, "act.compensate.description") end
    out.reason = a.reason ~= nil and str(a.reason, "act.compensate.reason", 100) or "goodwill"
    return out
end
function BUILD.schedule(a, ev)
    a = table_arg(a, "schedule")
    local name = a.name
    if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_]*$") or #name > 50 then
        fail(3, "act.schedule: name must be a lower-case word (it fires timer.<name>)")
    end
    local due
    if a.at ~= nil then
        if type(a.at) ~= "number" then fail(3, "act.schedule: at must be unix seconds") end
        due = math.floor(a.at)
    elseif a.after ~= nil then
        local secs = check_duration(a.after, "act.schedule.after", 3)
        local cal
        if a.calendar ~= nil then
            cal = calendars[a.calendar]
            if not cal then fail(3, "act.schedule: no calendar named \"%s\"", tostring(a.calendar)) end
        end
        due = C.cal_add(cal and cal.cal, ev.now, secs)
    else
        fail(3, "act.schedule needs after (a duration) or at (unix seconds)")
    end
    local out = { name = name, due = due }
    if a.data ~= nil then
        if type(a.data) ~= "table" then fail(3, "act.schedule: data must be a table") end
        out.data = a.data
    end
    return out
end
function BUILD.cancel(a)
    if type(a) == "table" then a = a.name end
    if type(a) ~= "string" or not a:match("^[a-z][a-z0-9_]*$") then
        fail(3, "act.cancel: name must be a timer's name")
    end
    return { name = a }
end
function BUILD.link_problem(a)
    if type(a) == "table" then a = a.problem end
    return { problem = str(a, "act.link_problem", 200) }
end
-- The link itself is made by the host (it is signed with a key scripts
-- never see); {{survey.url}} in the text marks where it goes.
local SURVEY_URL = "@@SURVEY_URL@@"
local SURVEY_TEXT = "How did we do? Rate our answer from 1 (poor) to 5 (excellent): "
                    .. "{{survey.url}} - or simply reply with a number from 1 to 5."
function BUILD.survey(a, ev)
    a = a == nil and {} or table_arg(a, "survey")
    local out = {}
    if a.expires ~= nil then
        out.expires_in = check_duration(a.expires, "act.survey.expires", 3)
    end
    local text = a.text
    if text == nil then
        text = SURVEY_TEXT
    end
    if text ~= false then
        if type(text) ~= "string" or not text:find("{{%s*survey%.url%s*}}") then
            fail(3, "act.survey: text must contain {{survey.url}} (or be false: no message)")
        end
        out.text = render((text:gsub("{{%s*survey%.url%s*}}", SURVEY_URL)), ev)
    end
    return out
end
function BUILD.link_identity(a)
    a = table_arg(a, "link_identity")
    return { kind = one_of(IDENTITY_KINDS, a.kind, "act.link_identity.kind"),
             value = str(a.value, "act.link_identity.value", 320) }
end

R.ACTIONS = {}
for name in pairs(BUILD) do
    R.ACTIONS[#R.ACTIONS + 1] = name
end
table.sort(R.ACTIONS)

-- Whether the event is about mail a machine sent: its message, or the
-- ticket that keeps such mail (tagged auto-submitted by the email channel).
local function machine_sent(ev)
    local m, t = ev.message, ev.ticket
    if m and m.auto_submitted then
        return true
    end
    for _, tag in ipairs(t and t.tags or {}) do
        if tag == "auto-submitted" then
            return true
        end
    end
    return false
end

-- The act table a handler records on.
local function new_act(ev, script, out)
    return setmetatable({}, {
        __index = function(_, name)
            local build = BUILD[name]
            if not build then
                error(string.format("unknown action act.%s", tostring(name)), 2)
            end
            return function(a)
                local ok, action = pcall(build, a, ev)
                if not ok then
                    error(string.gsub(tostring(action), "^[^:\n]*:%d+: ", ""), 2)
                end
                -- Mail a machine sent never gets an automatic answer (two
                -- auto-responders would otherwise answer each other for
                -- ever), nor does the ticket such mail was kept on.
                if (name == "reply" or name == "survey") and machine_sent(ev) then
                    return
                end
                local _, line = where(2)
                action.type, action.script, action.line = name, script, line
                out[#out + 1] = action
            end
        end,
        __newindex = function() error("act records actions: call act.<action>{...}", 2) end,
        __metatable = false,
    })
end

-- ======================== SLA clock ========================
--
-- The state (stored with the ticket) holds facts, not due times: when the
-- clock started, business seconds spent paused, when each target was met.
-- Due times follow from it and the policy, so a changed policy or calendar
-- recomputes them, and a timer that fires is checked against them.

local function cal_of(p)
    return p.calendar and calendars[p.calendar] and calendars[p.calendar].cal or nil
end

local function paused_now(st, cal, now)
    local p = st.paused_biz or 0
    if st.paused_since then
        p = p + C.cal_between(cal, st.paused_since, now)
    end
    return p
end

local function dues(p, st, now)
    local cal = cal_of(p)
    local paused = paused_now(st, cal, now)
    local d = {}
    if p.targets.first_response and not st.first_response_met then
        d.first_response = C.cal_add(cal, st.started, p.targets.first_response + paused)
    end
    if p.targets.next_response and st.next_started and not st.resolution_met then
        d.next_response = C.cal_add(cal, st.next_started,
                                    p.targets.next_response + paused - (st.next_paused0 or 0))
    end
    if p.targets.resolution and not st.resolution_met then
        d.resolution = C.cal_add(cal, st.started, p.targets.resolution + paused)
    end
    return d
end

local function warn_time(p, st, target, now)
    if not p.warn or p.targets[target] <= p.warn then
        return nil
    end
    local cal = cal_of(p)
    local paused = paused_now(st, cal, now)
    if target == "next_response" then
        return C.cal_add(cal, st.next_started, p.targets[target] - p.warn + paused - (st.next_paused0 or 0))
    end
    return C.cal_add(cal, st.started, p.targets[target] - p.warn + paused)
end

local function select_policy(ticket)
    for _, p in ipairs(slas) do
        if p.match == nil or p.match(ticket) then
            return p
        end
    end
    return nil
end

local function copy(t)
    local out = {}
    for k, v in pairs(t or {}) do
        out[k] = type(v) == "table" and copy(v) or v
    end
    return out
end

-- Advances the SLA state of the event's ticket.  Returns the new SLA
-- document (false: remove, nil: no change) and whether the event is a
-- stale SLA timer whose handlers must not run.
function R.sla_step(ev, view)
    local t = ev.ticket
    if not t or #slas == 0 and not ev.sla then
        return nil, false
    end
    local old = ev.sla
    local p = select_policy(view.ticket)
    if not p then
        if old then
            return false, false -- the ticket no longer has an SLA
        end
        return nil, false
    end
    local now = ev.now
    local st = copy(old and old.state)
    if not st.started then
        st.started = t.created_at
        st.first_response_met = t.first_response_at
        if t.status == "solved" or t.status == "closed" then
            st.resolution_met = t.solved_at or now
        end
        st.paused_biz, st.breached, st.warned = 0, {}, {}
    end
    local cal = cal_of(p)
    local m = ev.message
    if ev.type == "message.sent" and m and m.author == "agent" then
        st.first_response_met = st.first_response_met or m.at
        st.next_started, st.next_paused0 = nil, nil
        st.breached.next_response, st.warned.next_response = nil, nil
    elseif ev.type == "message.received" and m and st.first_response_met and not st.next_started then
        st.next_started, st.next_paused0 = m.at, paused_now(st, cal, now)
    end
    local closed = t.status == "solved" or t.status == "closed"
    if closed and not st.resolution_met then
        st.resolution_met = t.solved_at or now
        st.next_started = nil
    elseif not closed and st.resolution_met then
        -- Reopened: the time it spent solved does not count against it.
        st.paused_biz = (st.paused_biz or 0) + C.cal_between(cal, st.resolution_met, now)
        st.resolution_met = nil
    end
    if p.pause[t.status] and not st.paused_since and not closed then
        st.paused_since = now
    elseif not p.pause[t.status] and st.paused_since then
        st.paused_biz = paused_now(st, cal, now)
        st.paused_since = nil
    end

    -- Business time to each target, once met, for the reports.
    if st.first_response_met and not st.first_response_secs then
        st.first_response_secs = math.max(0, C.cal_between(cal, st.started, st.first_response_met)
                                               - paused_now(st, cal, st.first_response_met))
    end
    if st.resolution_met and not st.resolution_secs then
        st.resolution_secs = math.max(0, C.cal_between(cal, st.started, st.resolution_met)
                                          - paused_now(st, cal, st.resolution_met))
    elseif not st.resolution_met then
        st.resolution_secs = nil
    end

    local d = dues(p, st, now)
    local stale = false
    if ev.type == "sla.breached" or ev.type == "sla.warning" then
        local target = ev.data and ev.data.target
        local due = target and d[target]
        local at = ev.type == "sla.breached" and due or (target and warn_time(p, st, target, now))
        if not due or st.paused_since or not at or math.abs(at - (ev.data.due_at or 0)) > 1 then
            stale = true
        elseif ev.type == "sla.breached" then
            st.breached[target] = due
        else
            st.warned[target] = at
        end
    end

    local doc = { policy = p.name, state = st, paused = st.paused_since ~= nil, breached = {},
                  timers = {}, first_response_secs = st.first_response_secs,
                  resolution_secs = st.resolution_secs }
    for _, target in ipairs(TARGETS) do
        if d[target] then
            doc[target .. "_due"] = d[target]
        end
        if st.breached[target] then
            doc.breached[#doc.breached + 1] = target
        end
        if d[target] and not st.paused_since and not st.breached[target] then
            doc.timers[#doc.timers + 1] = { name = "sla." .. target, due = d[target],
                                            data = { target = target } }
            local w = warn_time(p, st, target, now)
            if w and not st.warned[target] then
                doc.timers[#doc.timers + 1] = { name = "sla." .. target .. ".warning", due = w,
                                                data = { target = target } }
            end
        end
    end
    return doc, stale
end

-- What handlers see as ev.sla.
local function sla_view(doc, ev)
    if not doc then
        return nil
    end
    local v = { policy = doc.policy, paused = doc.paused, breached = {} }
    for _, target in ipairs(TARGETS) do
        v[target .. "_due"] = doc[target .. "_due"]
    end
    for _, target in ipairs(doc.breached or {}) do
        v.breached[target] = true
    end
    if ev.type == "sla.breached" or ev.type == "sla.warning" then
        v.target = ev.data and ev.data.target
        v.due_at = ev.data and ev.data.due_at
    end
    return v
end

-- ======================== dispatch (called from C) ========================

-- Prepares an event (a plain table from its JSON snapshot): the view the
-- handlers share and the handlers to run.
function R.prepare(ev)
    if ev.ticket and ev.customer then
        ev.ticket.customer = ev.customer
    end
    local list = handlers[ev.type] or {}
    return readonly(ev), list
end

-- Completes the view once the SLA step has run: ev.sla becomes what
-- handlers see (doc is the new state, or nil when it did not change).
function R.set_sla(ev, doc)
    if doc == nil and ev.sla and ev.sla.state then
        local st = ev.sla.state
        doc = { policy = ev.sla.policy, paused = st.paused_since ~= nil, breached = {} }
        for k in pairs(st.breached or {}) do
            doc.breached[#doc.breached + 1] = k
        end
    end
    ev.sla = doc and sla_view(doc, ev) or nil
end

-- Runs one handler (inside the coroutine C gives it) and returns its actions.
function R.run_handler(h, view)
    local out = {}
    h.fn(view, new_act(view, h.script, out))
    return out
end

function R.handler_count(event)
    return #(handlers[event] or {})
end

-- ======================== loading ========================

function R.begin_script(name)
    current_script = name
end

-- Checks what can only be checked once every script is in: the calendars
-- SLA policies name.
function R.finish()
    for _, p in ipairs(slas) do
        if p.calendar and not calendars[p.calendar] then
            return string.format("%s.lua:%d: sla \"%s\" names calendar \"%s\", which is not declared",
                                 p.script, p.line or 0, p.name, p.calendar), p.line
        end
    end
    return nil
end

-- Lists uses of act.<name> in a source that are not actions (a typo
-- caught before the handler ever runs).
function R.lint(source, actname)
    local found = {}
    local n = 0
    for line in (source .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        line = line:gsub("%-%-.*$", "")
        for name in line:gmatch("%f[%w_]act%.([%a_][%w_]*)") do
            if not BUILD[name] then
                found[#found + 1] = { line = n, name = name }
            end
        end
    end
    return found
end

function R.summary()
    local s = { calendars = {}, slas = {}, templates = {}, handlers = {} }
    for name in pairs(calendars) do s.calendars[#s.calendars + 1] = name end
    for _, p in ipairs(slas) do s.slas[#s.slas + 1] = p.name end
    for name in pairs(templates) do s.templates[#s.templates + 1] = name end
    for ev, list in pairs(handlers) do
        s.handlers[#s.handlers + 1] = string.format("%s (%d)", ev, #list)
    end
    table.sort(s.calendars)
    table.sort(s.templates)
    table.sort(s.handlers)
    return s
end

-- ======================== the scripts' environment ========================

local function copy_lib(lib, names)
    local out = {}
    for _, n in ipairs(names) do
        out[n] = lib[n]
    end
    return out
end

-- string without dump (it would turn functions into bytecode).
local SAFE_STRING = { "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match",
                      "rep", "reverse", "sub", "upper", "pack", "packsize", "unpack" }

function R.user_env()
    local env = {}
    for _, n in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal",
                         "rawlen", "select", "tonumber", "tostring", "type", "xpcall",
                         "setmetatable", "getmetatable", "rawget", "rawset" }) do
        env[n] = _G[n]
    end
    env._VERSION = _VERSION
    env.string = copy_lib(string, SAFE_STRING)
    env.table = copy_lib(table, { "concat", "insert", "move", "pack", "remove", "sort", "unpack" })
    env.math = copy_lib(math, { "abs", "ceil", "exp", "floor", "fmod", "huge", "log", "max",
                                "maxinteger", "min", "mininteger", "modf", "pi", "sqrt",
                                "tointeger", "type", "ult", "sin", "cos", "tan", "asin", "acos",
                                "atan", "random" })
    env.utf8 = copy_lib(utf8, { "char", "charpattern", "codes", "codepoint", "len", "offset" })
    env.coroutine = copy_lib(coroutine, { "create", "isyieldable", "resume", "running", "status",
                                          "wrap", "yield" })
    env.os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime }
    -- Text chunks only, in this environment unless one is given: no bytecode.
    env.load = function(chunk, name, _, e)
        return load(chunk, name, "t", e or env)
    end
    env.collectgarbage = function(opt)
        if opt == nil or opt == "count" then
            return collectgarbage("count")
        end
        error("collectgarbage: only \"count\" is available to rules", 2)
    end
    env.print = function() end
    env.calendar, env.sla, env.template, env.on = calendar, sla, template, on
    env.duration = function(s) return check_duration(s, "duration", 2) end
    env.business = {
        add = function(cal_name, t, d)
            local c = calendars[cal_name]
            if not c then fail(2, "business.add: no calendar named \"%s\"", tostring(cal_name)) end
            return C.cal_add(c.cal, t, check_duration(d, "business.add", 2))
        end,
        between = function(cal_name, a, b)
            local c = calendars[cal_name]
            if not c then fail(2, "business.between: no calendar named \"%s\"", tostring(cal_name)) end
            return C.cal_between(c.cal, a, b)
        end,
    }
    env._G = env
    -- Strings keep their methods ("x"):upper(), from a copy without dump
    -- that scripts can neither reach nor change (getmetatable("") is false).
    local string_mt = getmetatable("")
    string_mt.__index = copy_lib(string, SAFE_STRING)
    string_mt.__metatable = false
    return env
end

return R

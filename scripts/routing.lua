-- routing.lua - who takes new work.
--
-- New tickets go to the first route that matches (by channel, customer
-- tier, language or tag); a route names a team and how to choose within
-- it: "least_loaded" (fewest open tickets) or "round_robin".  Agents who
-- are away get nothing new, and their open tickets are handed over.
-- Add routes for your teams; with none, tickets wait unassigned.

local routes = {
  -- { tier = "gold", team = "vip", strategy = "least_loaded" },
  -- { channel = "chat", team = "live chat", strategy = "round_robin" },
  -- { language = "lv", team = "latvian" },
}

local function matches(route, ev)
  local t, c = ev.ticket, ev.customer
  if route.channel and route.channel ~= t.channel then return false end
  if route.tier and route.tier ~= c.tier then return false end
  if route.language and route.language ~= c.language then return false end
  if route.tag then
    local found = false
    for _, tag in ipairs(t.tags) do found = found or tag == route.tag end
    if not found then return false end
  end
  return true
end

on("ticket.created", function(ev, act)
  if ev.ticket.assignee then return end
  for _, route in ipairs(routes) do
    if matches(route, ev) then
      act.assign { team = route.team, strategy = route.strategy or "least_loaded" }
      return
    end
  end
end)

-- An agent who went away: their open tickets go back to their team.
on("agent.away", function(ev, act)
  if ev.ticket and ev.ticket.team then
    act.assign { team = ev.ticket.team, strategy = "least_loaded" }
  end
end)

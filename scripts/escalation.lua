-- escalation.lua - what happens as an SLA target nears and passes.
--
--   warning   the assignee (or, without one, the supervisors) is told
--   level 1   at the breach: supervisors are told, priority goes to high
--   level 2   an hour later, still open: the ticket moves
--             to the "supervisors" team (least loaded member), priority urgent
--   level 3   two more hours: the tenant's admins are told
--
-- Each level is reached once (act.escalate ignores a level the ticket
-- already has), and each step is in the ticket's audit trail.

on("sla.warning", function(ev, act)
  local who = ev.ticket.assignee and { assignee = true } or { supervisors = true }
  who.text = string.format("Ticket #%d: %s is due soon", ev.ticket.number, ev.sla.target)
  act.notify(who)
end)

on("sla.breached", function(ev, act)
  act.escalate {
    level = 1, priority = "high",
    notify = { supervisors = true, assignee = true,
               text = string.format("Ticket #%d breached its %s target", ev.ticket.number, ev.sla.target) },
  }
  act.schedule { name = "escalate", after = "1h" }
end)

local function still_open(ev)
  return ev.ticket.status ~= "solved" and ev.ticket.status ~= "closed"
end

on("timer.escalate", function(ev, act)
  if not still_open(ev) then return end
  if ev.ticket.escalation_level < 2 then
    act.escalate { level = 2, team = "supervisors", strategy = "least_loaded", priority = "urgent" }
    act.schedule { name = "escalate", after = "2h" }
  else
    act.escalate { level = 3, notify = { admins = true,
      text = string.format("Ticket #%d is still unresolved after escalation", ev.ticket.number) } }
  end
end)

-- A solved ticket needs no more escalation.
on("ticket.solved", function(ev, act)
  act.cancel("escalate")
end)

-- sla.lua - service-level targets.
--
-- A ticket gets the first policy (in the order written) whose match
-- accepts it.  Targets count business time on the policy's calendar; the
-- clock stops while the ticket waits on the customer (pending) or is on
-- hold.  Due times are on the ticket (GET .../tickets/N, "sla"); a warning
-- fires warn_before the breach, and escalation.lua and compensation.lua
-- act on both.  Units: s, m, h, d (24 business hours), w.

calendar "office" {
  tz = "Europe/Riga",
  hours = {
    mon = { "09:00", "18:00" }, tue = { "09:00", "18:00" }, wed = { "09:00", "18:00" },
    thu = { "09:00", "18:00" }, fri = { "09:00", "18:00" },
  },
  holidays = { "2026-12-24", "2026-12-25", "2026-12-26", "2026-12-31", "2027-01-01" },
}

-- Customers who pay for the gold plan.
sla "gold" {
  match = function(t) return t.customer.tier == "gold" end,
  first_response = "1h", next_response = "4h", resolution = "8h",
  calendar = "office", pause_when = { "pending", "on_hold" }, warn_before = "15m",
}

-- Anything marked urgent, whoever asks.
sla "urgent" {
  match = function(t) return t.priority == "urgent" end,
  first_response = "30m", next_response = "2h", resolution = "4h",
  calendar = "office", pause_when = { "pending", "on_hold" }, warn_before = "10m",
}

-- Everyone else: a working day to answer, a working week to solve.
sla "standard" {
  first_response = "9h", next_response = "18h", resolution = "45h",
  calendar = "office", pause_when = { "pending", "on_hold" }, warn_before = "1h",
}

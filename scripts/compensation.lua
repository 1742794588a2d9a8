-- compensation.lua - goodwill when the business fails a customer.
--
-- A rule's compensation goes through the same ledger as an agent's: past
-- the tenant's monthly budget it waits for a supervisor's approval
-- instead of being issued (PUT .../compensations/policy sets budgets).

-- Gold customers get a credit the first time a ticket of theirs breaches.
on("sla.breached", function(ev, act)
  local breaches = 0
  for _ in pairs(ev.sla.breached) do breaches = breaches + 1 end
  if ev.customer.tier == "gold" and breaches == 1 then
    act.compensate { kind = "credit", amount = 10, currency = "EUR", reason = "sla_breach",
                     description = "Credit for a late answer on ticket #" .. ev.ticket.number }
  end
end)

-- A poor rating is followed up by a supervisor, with a gift to offer.
on("feedback.received", function(ev, act)
  local rating = ev.data and ev.data.rating
  if rating and rating <= 2 then
    act.compensate { kind = "gift", description = "Apology gift after a poor rating",
                     reason = "low_rating" }
    act.notify { supervisors = true,
                 text = string.format("Ticket #%d was rated %d", ev.ticket.number, rating) }
  end
end)

-- feedback.lua - asking customers how we did.
--
-- When a ticket is solved, the customer gets a survey on the ticket's
-- channel: a link to a one-page form (signed, usable once, valid for
-- survey_valid_for) and the option to reply with a digit from 1 to 5.
-- The answer raises feedback.received (compensation.lua acts on poor ones).
-- Tickets made through the API have no channel to the customer: an agent
-- asks for the link instead (POST .../tickets/N/survey).

on("ticket.solved", function(ev, act)
  if ev.ticket.channel == "api" then return end
  act.survey {}
end)

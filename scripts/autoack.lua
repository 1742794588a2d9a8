-- autoack.lua - answering a new email at once with its ticket number.
--
-- The customer learns that the message arrived and which number to quote;
-- the reply carries the ticket's tag in its subject, so an answer to it
-- joins the same ticket.  Mail sent by machines (auto-replies, bounces,
-- list mail) never opens a ticket and never gets an automatic answer, so
-- two auto-responders cannot answer each other for ever.

template "email_received" {
  text = "Hello {{customer.name}},\n\n"
    .. "thank you for writing to us. Your request is now ticket #{{ticket.number}}, "
    .. "\"{{ticket.subject}}\"; one of us will answer you soon.\n\n"
    .. "To add anything, simply reply to this message.\n"
}

on("ticket.created", function(ev, act)
  if ev.ticket.channel ~= "email" then return end
  act.reply { template = "email_received" }
end)

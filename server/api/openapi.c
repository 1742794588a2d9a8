/*
 * openapi.c - GET /api/v1/openapi.json.  The document is built from the
 * router itself (so it lists exactly the routes that exist) joined with
 * the descriptions below; a route without a description is a build-time
 * test failure (tests/unit/server/api/openapi.c), so the two cannot drift.
 */
#include "api.h"
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *method;
    const char *pattern;
    const char *summary;
    const char *tag;
    const char *body;   /* request schema in components, or NULL */
    int status;         /* success status */
    const char *result; /* response schema, or NULL */
    int public_route;   /* no bearer token needed */
} openapi_op_t;

#define T "/api/v1/tenants/{tenant}"
static const openapi_op_t openapi_ops[] = {
    {"GET", "/healthz", "Liveness: the process answers", "operations", NULL, 200, NULL, 1},
    {"GET", "/readyz", "Readiness: the database is reachable and migrated", "operations", NULL, 200,
     NULL, 1},
    {"GET", "/metrics", "Prometheus metrics", "operations", NULL, 200, NULL, 1},
    {"GET", "/api/v1/openapi.json", "This document", "operations", NULL, 200, NULL, 1},
    {"POST", "/api/v1/sessions", "Log in: exchange email and password for a bearer token",
     "sessions", "Login", 201, "Session", 1},
    {"DELETE", "/api/v1/sessions/current", "Log out: revoke the token used", "sessions", NULL, 204,
     NULL, 0},
    {"GET", "/api/v1/stream",
     "Live ticket and message events of the agent's tenants (WebSocket; token in Authorization "
     "or ?access_token=)",
     "sessions", NULL, 101, NULL, 0},
    {"GET", "/api/v1/me", "The agent behind the token and its tenants", "sessions", NULL, 200, "Me",
     0},
    {"GET", "/api/v1/tenants", "The tenants of the caller", "tenants", NULL, 200, "List", 0},
    {"POST", "/api/v1/tenants", "Create a tenant (platform administrators)", "tenants",
     "TenantCreate", 201, "Tenant", 0},
    {"GET", T "/tickets", "List and search tickets (keyset pagination)", "tickets", NULL, 200,
     "List", 0},
    {"POST", T "/tickets", "Create a ticket with its first message and, if new, its customer",
     "tickets", "TicketCreate", 201, "Ticket", 0},
    {"GET", T "/tickets/{number}", "A ticket with its messages", "tickets", NULL, 200, "Ticket", 0},
    {"PATCH", T "/tickets/{number}", "Change a ticket (If-Match: version for optimistic locking)",
     "tickets", "TicketUpdate", 200, "Ticket", 0},
    {"POST", T "/tickets/{number}/messages", "Reply to the customer or add an internal note",
     "tickets", "MessageCreate", 201, "Message", 0},
    {"GET", T "/tickets/{number}/events", "The ticket's audit trail", "tickets", NULL, 200, "List",
     0},
    {"GET", T "/tickets/{number}/attachments/{id}", "An attachment's bytes (as a download)",
     "tickets", NULL, 200, NULL, 0},
    {"POST", T "/tickets/{number}/typing", "Show the customer that an agent is typing (chat)",
     "tickets", NULL, 204, NULL, 0},
    {"POST", T "/tickets/{number}/merge", "Merge this ticket into another", "tickets", "Merge", 200,
     "Ticket", 0},
    {"GET", T "/agents", "The tenant's agents and their roles", "agents", NULL, 200, "List", 0},
    {"POST", T "/agents", "Add an agent to the tenant (creating it if new)", "agents", "AgentAdd",
     201, "Agent", 0},
    {"PATCH", T "/agents/{id}", "Change an agent's role", "agents", "AgentUpdate", 200, "Agent", 0},
    {"DELETE", T "/agents/{id}", "Remove an agent from the tenant", "agents", NULL, 204, NULL, 0},
    {"GET", T "/api_keys", "The tenant's API keys (without the keys)", "agents", NULL, 200, "List",
     0},
    {"POST", T "/api_keys", "Create an API key for an integration (shown once)", "agents",
     "ApiKeyCreate", 201, NULL, 0},
    {"DELETE", T "/api_keys/{id}", "Revoke an API key", "agents", NULL, 204, NULL, 0},
    {"GET", T "/channels", "The tenant's channels (admin)", "channels", NULL, 200, "List", 0},
    {"POST", T "/channels", "Add a channel: its plugin checks the settings; secrets are sealed",
     "channels", "ChannelCreate", 201, "Channel", 0},
    {"GET", T "/channels/{id}", "A channel, with what to configure outside", "channels", NULL, 200,
     "Channel", 0},
    {"PATCH", T "/channels/{id}", "Change a channel's name, settings, secrets or state", "channels",
     "ChannelUpdate", 200, "Channel", 0},
    {"GET", T "/rules", "The tenant's rule scripts, active versions (admin)", "rules", NULL, 200,
     "List", 0},
    {"GET", T "/rules/{name}", "A rule script's active version with its source (admin)", "rules",
     NULL, 200, "RuleScript", 0},
    {"PUT", T "/rules/{name}",
     "Upload a new version: it must compile and load with the tenant's other scripts (422 "
     "script_invalid with the line otherwise); workers switch to it at once",
     "rules", "RuleUpload", 200, "RuleScript", 0},
    {"GET", T "/rules/{name}/versions", "A rule script's history, newest first (admin)", "rules",
     NULL, 200, "List", 0},
    {"GET", T "/rules/{name}/versions/{version}", "One version of a rule script (admin)", "rules",
     NULL, 200, "RuleScript", 0},
    {"POST", T "/rules/{name}/rollback",
     "Make an earlier version active again (as a new version, once it loads)", "rules",
     "RuleRollback", 200, "RuleScript", 0},
    {"PUT", T "/agents/{id}/away",
     "Mark an agent away or back (itself, or anyone for supervisors); away raises agent.away for "
     "each of its open tickets",
     "teams", "Away", 200, NULL, 0},
    {"GET", T "/webhooks/key",
     "The key that signs the tenant's webhooks (X-Switchboard-Signature: sha256=HMAC) (admin)",
     "rules", NULL, 200, NULL, 0},
    {"GET", T "/notifications",
     "The caller's notifications from rules (escalations, warnings), newest first; "
     "?unread=true for the unread",
     "rules", NULL, 200, "List", 0},
    {"POST", T "/notifications/read", "Mark the caller's notifications read (ids, or all)", "rules",
     "NotificationsRead", 200, NULL, 0},
    {"POST", T "/tickets/{number}/survey",
     "The survey link of a solved ticket (the open one, or a new one): {\"url\", \"expires_at\"}",
     "feedback", NULL, 200, NULL, 0},
    {"GET", T "/feedback", "Customers' ratings, newest first (filters ticket, agent)", "feedback",
     NULL, 200, "List", 0},
    {"GET", "/survey/{token}",
     "The survey page behind a link (HTML; no login: the signed token is the key; 404 forged, "
     "410 expired, 409 answered)",
     "feedback", NULL, 200, NULL, 1},
    {"POST", "/survey/{token}",
     "Answer a survey once: {\"rating\": 1..5, \"comment\"} as JSON or the page's form", "feedback",
     "SurveyAnswer", 201, NULL, 1},
    {"GET", T "/problems", "Recurring problems with their ticket counts (filter status)",
     "problems", NULL, 200, "List", 0},
    {"POST", T "/problems", "Record a problem: title, status, root cause, workaround", "problems",
     "Problem", 201, NULL, 0},
    {"GET", T "/problems/{id}", "A problem and the numbers of its tickets", "problems", NULL, 200,
     NULL, 0},
    {"PATCH", T "/problems/{id}", "Change a problem (status, root cause, workaround)", "problems",
     "Problem", 200, NULL, 0},
    {"PUT", T "/tickets/{number}/problem", "Link the ticket to a problem, or unlink it (null)",
     "problems", "TicketProblem", 200, "Ticket", 0},
    {"GET", T "/kb/articles",
     "Knowledge base articles, drafts included (filters q, status, language, tag, "
     "needs_review=true|false; limit, cursor): newest change first, or with q the best matches "
     "in any language, each with rank and snippet",
     "kb", NULL, 200, "List", 0},
    {"POST", T "/kb/articles", "Write a knowledge base article (supervisors and admins)", "kb",
     "KbArticleCreate", 201, "KbArticle", 0},
    {"GET", T "/kb/articles/{id}", "A knowledge base article", "kb", NULL, 200, "KbArticle", 0},
    {"PATCH", T "/kb/articles/{id}",
     "Change an article (supervisors and admins); an edit also counts as a review", "kb",
     "KbArticleUpdate", 200, "KbArticle", 0},
    {"DELETE", T "/kb/articles/{id}", "Delete an article (supervisors and admins)", "kb", NULL, 204,
     NULL, 0},
    {"POST", T "/kb/articles/{id}/reviewed",
     "Confirm an article is still right, so it is no longer due for review (optional body "
     "{\"note\"}) (supervisors and admins)",
     "kb", NULL, 200, "KbArticle", 0},
    {"GET", T "/kb/settings", "Knowledge base settings: days until an article is due for review",
     "kb", NULL, 200, "KbSettings", 0},
    {"PUT", T "/kb/settings", "Change the knowledge base settings (admin)", "kb", "KbSettings", 200,
     "KbSettings", 0},
    {"GET", "/kb/{tenant}/articles",
     "A tenant's published articles, without login: newest first, or with q the best matches in "
     "any language, each with rank and snippet (lang, limit up to 50)",
     "kb", NULL, 200, "List", 1},
    {"GET", "/kb/{tenant}/articles/{id}", "A published article, without login (counts a view)",
     "kb", NULL, 200, "KbPublicArticle", 1},
    {"POST", "/kb/{tenant}/articles/{id}/feedback",
     "Tell whether a published article helped, without login", "kb", "KbFeedback", 204, NULL, 1},
    {"GET", T "/reports/volume",
     "Tickets created, solved and open (backlog) per day, week or month (from, to, group; "
     "filters channel, team, agent, priority, customer_kind; JSON, or CSV with format=csv or "
     "Accept: text/csv)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/reports/response-times",
     "Median and p90 of first response and resolution business seconds, per period of "
     "creation (JSON or CSV)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/reports/sla",
     "SLA attainment and breaches per target, per period of creation (JSON or CSV)", "reports",
     NULL, 200, "Report", 0},
    {"GET", T "/reports/csat",
     "Customer satisfaction per agent and team: ratings, average, share of 4-5, survey "
     "response rate (JSON or CSV)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/reports/agents",
     "Agent scorecards: tickets handled, median response and resolution times, CSAT, "
     "compensation issued (JSON or CSV)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/reports/compensation",
     "Compensation granted per month, reason and currency, and pending approvals (JSON or CSV)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/reports/retention",
     "Customers who came back in the next period of equal length, and who went silent after a "
     "low rating or an SLA breach (JSON or CSV)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/reports/channels",
     "Tickets created and solved per period and channel (JSON or CSV)", "reports", NULL, 200,
     "Report", 0},
    {"GET", T "/reports/problems",
     "Complaints: the top tags and the top linked problems of the tickets created in the range "
     "(JSON or CSV)",
     "reports", NULL, 200, "Report", 0},
    {"GET", T "/teams", "Teams and their members", "teams", NULL, 200, "List", 0},
    {"POST", T "/teams", "Create a team", "teams", "TeamCreate", 201, "Team", 0},
    {"POST", T "/teams/{id}/members", "Add an agent to a team", "teams", "TeamMemberAdd", 204, NULL,
     0},
    {"DELETE", T "/teams/{id}/members/{agent}", "Remove an agent from a team", "teams", NULL, 204,
     NULL, 0},
    {"GET", T "/customers", "List and search customers", "customers", NULL, 200, "List", 0},
    {"POST", T "/customers", "Create a customer", "customers", "CustomerCreate", 201, "Customer",
     0},
    {"GET", T "/customers/{id}", "A customer with its tickets", "customers", NULL, 200, "Customer",
     0},
    {"GET", T "/customers/{id}/timeline",
     "Every message of the customer's tickets on every channel, newest page first (?limit=, "
     "?before=)",
     "customers", NULL, 200, "List", 0},
    {"PATCH", T "/customers/{id}", "Change a customer", "customers", "CustomerUpdate", 200,
     "Customer", 0},
    {"POST", T "/customers/{id}/identities", "Link an identity (email, phone, messenger id...)",
     "customers", "Identity", 201, NULL, 0},
    {"POST", T "/customers/{id}/merge", "Merge this customer into another", "customers", "Merge",
     200, "Customer", 0},
    {"GET", T "/organizations", "Organizations", "customers", NULL, 200, "List", 0},
    {"POST", T "/organizations", "Create an organization", "customers", "OrganizationCreate", 201,
     NULL, 0},
    {"GET", T "/compensations",
     "List compensations, newest first (filters ticket, customer, status, from, to; limit, cursor)",
     "compensations", NULL, 200, "List", 0},
    {"POST", T "/compensations",
     "Compensate a ticket's customer or a customer; over the issuer's authority or the monthly "
     "budget it waits for approval",
     "compensations", "CompensationCreate", 201, "Compensation", 0},
    {"GET", T "/compensations/totals",
     "What was granted (issued or approved) by month, reason, agent and rule, per currency",
     "compensations", NULL, 200, "CompensationTotals", 0},
    {"GET", T "/compensations/policy", "Authority limits per role and monthly budgets",
     "compensations", NULL, 200, "CompensationPolicy", 0},
    {"PUT", T "/compensations/policy", "Replace the authority limits and monthly budgets",
     "compensations", "CompensationPolicy", 200, "CompensationPolicy", 0},
    {"POST", T "/compensations/{id}/approve",
     "Approve a pending compensation (optional body {\"note\"})", "compensations", NULL, 200,
     "Compensation", 0},
    {"POST", T "/compensations/{id}/reject",
     "Reject a pending compensation (optional body {\"note\"})", "compensations", NULL, 200,
     "Compensation", 0},
};
#undef T

/* Request and response schemas: compact JSON, parsed once per document. */
static const struct {
    const char *name;
    const char *schema;
} openapi_schemas[] = {
    {"Error", "{\"type\":\"object\",\"required\":[\"error\"],\"properties\":{\"error\":{\"type\":"
              "\"object\",\"required\":[\"code\",\"message\"],\"properties\":{\"code\":{\"type\":"
              "\"string\"},\"message\":{\"type\":\"string\"},\"field\":{\"type\":\"string\"}}}}}"},
    {"List", "{\"type\":\"object\",\"required\":[\"items\",\"next_cursor\"],\"properties\":{"
             "\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}},\"next_cursor\":{"
             "\"type\":\"string\",\"nullable\":true}}}"},
    {"Login", "{\"type\":\"object\",\"required\":[\"email\",\"password\"],\"additionalProperties\""
              ":false,\"properties\":{\"email\":{\"type\":\"string\",\"maxLength\":254},"
              "\"password\":{\"type\":\"string\",\"maxLength\":1024}}}"},
    {"Session", "{\"type\":\"object\",\"properties\":{\"token\":{\"type\":\"string\"},"
                "\"expires_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"agent\":{"
                "\"type\":\"object\"}}}"},
    {"Me", "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":"
           "\"string\"},\"email\":{\"type\":\"string\"},\"platform_admin\":{\"type\":\"boolean\"},"
           "\"tenants\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}}}}"},
    {"TenantCreate",
     "{\"type\":\"object\",\"required\":[\"slug\",\"name\"],\"additionalProperties\""
     ":false,\"properties\":{\"slug\":{\"type\":\"string\",\"pattern\":"
     "\"^[a-z0-9][a-z0-9-]{0,62}$\"},\"name\":{\"type\":\"string\",\"maxLength\":200}}}"},
    {"Tenant", "{\"type\":\"object\",\"properties\":{\"slug\":{\"type\":\"string\"},\"name\":{"
               "\"type\":\"string\"}}}"},
    {"TicketCreate",
     "{\"type\":\"object\",\"required\":[\"subject\",\"customer\",\"message\"],"
     "\"additionalProperties\":false,\"properties\":{\"subject\":{\"type\":\"string\","
     "\"maxLength\":"
     "500},\"customer\":{\"type\":\"object\",\"properties\":{\"email\":{\"type\":\"string\"},"
     "\"phone\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},\"identity\":{\"$ref\":"
     "\"#/components/schemas/"
     "Identity\"}}},\"message\":{\"type\":\"object\",\"required\":[\"text\"],"
     "\"properties\":{\"text\":{\"type\":\"string\"},\"html\":{\"type\":\"string\"}}},\"priority\":"
     "{"
     "\"type\":\"string\",\"enum\":[\"low\",\"normal\",\"high\",\"urgent\"]},\"tags\":{\"type\":"
     "\"array\",\"maxItems\":50,\"items\":{\"type\":\"string\",\"maxLength\":100}},"
     "\"custom_fields\":{\"type\":\"object\"}}}"},
    {"TicketUpdate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"status\":{\"type\":"
     "\"string\",\"enum\":[\"new\",\"open\",\"pending\",\"on_hold\",\"solved\",\"closed\"]},"
     "\"priority\":{\"type\":\"string\",\"enum\":[\"low\",\"normal\",\"high\",\"urgent\"]},"
     "\"assignee\":{\"type\":\"integer\",\"nullable\":true},\"team\":{\"type\":\"integer\","
     "\"nullable\":true},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"subject\":"
     "{"
     "\"type\":\"string\",\"maxLength\":500},\"custom_fields\":{\"type\":\"object\"}}}"},
    {"Ticket",
     "{\"type\":\"object\",\"required\":[\"number\",\"subject\",\"status\",\"priority\",\"tags\","
     "\"customer\",\"assignee\",\"version\"],\"properties\":{\"number\":{\"type\":\"integer\"},"
     "\"subject\":{\"type\":\"string\"},\"status\":{\"type\":\"string\"},\"priority\":{\"type\":"
     "\"string\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"customer\":{"
     "\"$ref\":\"#/components/schemas/Customer\"},\"assignee\":{\"type\":\"object\",\"nullable\":"
     "true},\"version\":{\"type\":\"integer\"},\"messages\":{\"type\":\"array\",\"items\":{\"$"
     "ref\":"
     "\"#/components/schemas/Message\"}}}}"},
    {"MessageCreate",
     "{\"type\":\"object\",\"required\":[\"kind\",\"text\"],"
     "\"additionalProperties\":false,\"properties\":{\"kind\":{\"type\":\"string\","
     "\"enum\":[\"reply\",\"note\"]},\"text\":{\"type\":\"string\"},\"html\":{"
     "\"type\":\"string\"}}}"},
    {"Message", "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"direction\":{"
                "\"type\":\"string\",\"enum\":[\"inbound\",\"outbound\",\"note\"]},\"text\":{"
                "\"type\":\"string\"},\"created_at\":{\"type\":\"string\",\"format\":"
                "\"date-time\"}}}"},
    {"Merge", "{\"type\":\"object\",\"required\":[\"into\"],\"additionalProperties\":false,"
              "\"properties\":{\"into\":{\"type\":\"integer\"}}}"},
    {"AgentAdd", "{\"type\":\"object\",\"required\":[\"email\",\"role\"],\"additionalProperties\":"
                 "false,\"properties\":{\"email\":{\"type\":\"string\"},\"name\":{\"type\":"
                 "\"string\"},\"role\":{\"type\":\"string\",\"enum\":[\"admin\",\"supervisor\","
                 "\"agent\",\"viewer\"]},\"password\":{\"type\":\"string\",\"minLength\":8}}}"},
    {"AgentUpdate", "{\"type\":\"object\",\"required\":[\"role\"],\"additionalProperties\":false,"
                    "\"properties\":{\"role\":{\"type\":\"string\",\"enum\":[\"admin\","
                    "\"supervisor\",\"agent\",\"viewer\"]}}}"},
    {"Agent",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\""
     ":\"string\"},\"email\":{\"type\":\"string\"},\"role\":{\"type\":\"string\"}}}"},
    {"ApiKeyCreate", "{\"type\":\"object\",\"required\":[\"name\",\"role\"],"
                     "\"additionalProperties\":false,\"properties\":{\"name\":{\"type\":"
                     "\"string\"},\"role\":{\"type\":\"string\",\"enum\":[\"admin\","
                     "\"supervisor\",\"agent\",\"viewer\"]}}}"},
    {"ChannelCreate",
     "{\"type\":\"object\",\"required\":[\"type\",\"name\"],\"additionalProperties\":false,"
     "\"properties\":{\"type\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},"
     "\"settings\":{\"type\":\"object\"},\"secrets\":{\"type\":\"object\","
     "\"additionalProperties\":{\"type\":\"string\"},\"writeOnly\":true}}}"},
    {"ChannelUpdate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"type\":{\"type\":"
     "\"string\"},\"name\":{\"type\":\"string\"},\"settings\":{\"type\":\"object\"},"
     "\"secrets\":{\"type\":\"object\",\"writeOnly\":true},\"active\":{\"type\":\"boolean\"}}}"},
    {"Channel", "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"type\":"
                "{\"type\":\"string\"},\"name\":{\"type\":\"string\"},\"settings\":{\"type\":"
                "\"object\"},\"secrets\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
                "\"endpoints\":{\"type\":\"object\"}}}"},
    {"RuleUpload", "{\"type\":\"object\",\"required\":[\"source\"],\"additionalProperties\":"
                   "false,\"properties\":{\"source\":{\"type\":\"string\",\"maxLength\":262144},"
                   "\"comment\":{\"type\":\"string\",\"maxLength\":500}}}"},
    {"RuleRollback", "{\"type\":\"object\",\"required\":[\"version\"],\"additionalProperties\""
                     ":false,\"properties\":{\"version\":{\"type\":\"integer\"}}}"},
    {"RuleScript", "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
                   "\"version\":{\"type\":\"integer\"},\"source\":{\"type\":\"string\"},"
                   "\"comment\":{\"type\":\"string\",\"nullable\":true}}}"},
    {"NotificationsRead", "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                          "\"ids\":{\"type\":\"array\",\"maxItems\":1000,\"items\":{\"type\":"
                          "\"integer\"}}}}"},
    {"SurveyAnswer", "{\"type\":\"object\",\"required\":[\"rating\"],\"additionalProperties\":"
                     "false,\"properties\":{\"rating\":{\"type\":\"integer\",\"minimum\":1,"
                     "\"maximum\":5},\"comment\":{\"type\":\"string\",\"maxLength\":5000}}}"},
    {"Problem", "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                "\"title\":{\"type\":\"string\",\"maxLength\":200},\"status\":{\"type\":"
                "\"string\",\"enum\":[\"open\",\"known_error\",\"resolved\"]},\"root_cause\":"
                "{\"type\":\"string\"},\"workaround\":{\"type\":\"string\"}}}"},
    {"TicketProblem", "{\"type\":\"object\",\"required\":[\"problem\"],"
                      "\"additionalProperties\":false,\"properties\":{\"problem\":{\"type\":"
                      "\"integer\",\"nullable\":true}}}"},
    {"KbArticleCreate",
     "{\"type\":\"object\",\"required\":[\"title\",\"language\"],\"additionalProperties\":false,"
     "\"properties\":{\"title\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":300},"
     "\"body\":{\"type\":\"string\",\"maxLength\":200000,\"description\":\"Markdown\"},"
     "\"language\":{\"type\":\"string\",\"maxLength\":35,\"pattern\":"
     "\"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$\"},\"tags\":{\"type\":\"array\",\"maxItems\":50,"
     "\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100}},\"status\":{\"type\":"
     "\"string\",\"enum\":[\"draft\",\"published\"]}}}"},
    {"KbArticleUpdate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"title\":{\"type\":"
     "\"string\",\"minLength\":1,\"maxLength\":300},\"body\":{\"type\":\"string\",\"maxLength\":"
     "200000},\"language\":{\"type\":\"string\",\"maxLength\":35},\"tags\":{\"type\":\"array\","
     "\"maxItems\":50,\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100}},"
     "\"status\":{\"type\":\"string\",\"enum\":[\"draft\",\"published\"]}}}"},
    {"KbArticle",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"title\":{\"type\":"
     "\"string\"},\"body\":{\"type\":\"string\"},\"language\":{\"type\":\"string\"},\"tags\":{"
     "\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"status\":{\"type\":\"string\","
     "\"enum\":[\"draft\",\"published\"]},\"author\":{\"type\":\"object\",\"nullable\":true},"
     "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"updated_at\":{\"type\":"
     "\"string\",\"format\":\"date-time\"},\"reviewed_at\":{\"type\":\"string\",\"format\":"
     "\"date-time\"},\"needs_review\":{\"type\":\"boolean\"},\"views\":{\"type\":\"integer\"},"
     "\"helpful\":{\"type\":\"integer\"},\"not_helpful\":{\"type\":\"integer\"},\"url\":{"
     "\"type\":\"string\",\"description\":\"public path /kb/{tenant}/articles/{id}\"}}}"},
    {"KbPublicArticle",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"title\":{\"type\":"
     "\"string\"},\"body\":{\"type\":\"string\"},\"language\":{\"type\":\"string\"},\"tags\":{"
     "\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"created_at\":{\"type\":\"string\","
     "\"format\":\"date-time\"},\"updated_at\":{\"type\":\"string\",\"format\":\"date-time\"},"
     "\"url\":{\"type\":\"string\"}}}"},
    {"KbSettings", "{\"type\":\"object\",\"required\":[\"review_after_days\"],"
                   "\"additionalProperties\":false,\"properties\":{\"review_after_days\":{"
                   "\"type\":\"integer\",\"minimum\":1,\"maximum\":3650}}}"},
    {"KbFeedback", "{\"type\":\"object\",\"required\":[\"helpful\"],\"additionalProperties\":"
                   "false,\"properties\":{\"helpful\":{\"type\":\"boolean\"}}}"},
    {"Report",
     "{\"type\":\"object\",\"required\":[\"report\",\"from\",\"to\",\"group\",\"filters\","
     "\"rows\",\"totals\"],\"properties\":{\"report\":{\"type\":\"string\"},\"from\":{"
     "\"type\":\"string\",\"format\":\"date\"},\"to\":{\"type\":\"string\",\"format\":"
     "\"date\"},\"group\":{\"type\":\"string\",\"enum\":[\"day\",\"week\",\"month\"],"
     "\"nullable\":true},\"filters\":{\"type\":\"object\",\"properties\":{\"channel\":{"
     "\"type\":\"string\",\"nullable\":true},\"team\":{\"type\":\"integer\",\"nullable\":"
     "true},\"agent\":{\"type\":\"integer\",\"nullable\":true},\"priority\":{\"type\":"
     "\"string\",\"nullable\":true},\"customer_kind\":{\"type\":\"string\",\"nullable\":"
     "true}}},\"rows\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}},\"totals\":{"
     "\"type\":\"object\"}}}"},
    {"Away", "{\"type\":\"object\",\"required\":[\"away\"],\"additionalProperties\":false,"
             "\"properties\":{\"away\":{\"type\":\"boolean\"}}}"},
    {"TeamCreate", "{\"type\":\"object\",\"required\":[\"name\"],\"additionalProperties\":false,"
                   "\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":200}}}"},
    {"TeamMemberAdd", "{\"type\":\"object\",\"required\":[\"agent\"],\"additionalProperties\":"
                      "false,\"properties\":{\"agent\":{\"type\":\"integer\"}}}"},
    {"Team",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":"
     "\"string\"},\"members\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}}}"},
    {"Identity", "{\"type\":\"object\",\"required\":[\"kind\",\"value\"],\"properties\":{\"kind\":{"
                 "\"type\":\"string\",\"enum\":[\"email\",\"phone\",\"chat\",\"telegram\","
                 "\"whatsapp\",\"messenger\",\"sms\",\"other\"]},\"value\":{\"type\":\"string\","
                 "\"maxLength\":320}}}"},
    {"CustomerCreate",
     "{\"type\":\"object\",\"required\":[\"name\"],\"additionalProperties\":false,\"properties\":{"
     "\"name\":{\"type\":\"string\"},\"kind\":{\"type\":\"string\",\"enum\":[\"external\","
     "\"internal\"]},\"tier\":{\"type\":\"string\"},\"language\":{\"type\":\"string\"},"
     "\"organization\":{\"type\":\"integer\"},\"identities\":{\"type\":\"array\",\"items\":{\"$"
     "ref\":"
     "\"#/components/schemas/Identity\"}}}}"},
    {"CustomerUpdate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"name\":{\"type\":"
     "\"string\"},\"kind\":{\"type\":\"string\",\"enum\":[\"external\",\"internal\"]},\"tier\":{"
     "\"type\":\"string\"},\"language\":{\"type\":\"string\"},\"organization\":{\"type\":"
     "\"integer\","
     "\"nullable\":true}}}"},
    {"Customer",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{"
     "\"type\":\"string\"},\"kind\":{\"type\":\"string\"},\"email\":{\"type\":\"string\","
     "\"nullable\":true},\"identities\":{\"type\":\"array\",\"items\":{\"$ref\":"
     "\"#/components/schemas/Identity\"}}}}"},
    {"CompensationCreate",
     "{\"type\":\"object\",\"required\":[\"kind\",\"reason\"],\"additionalProperties\":false,"
     "\"properties\":{\"ticket\":{\"type\":\"integer\"},\"customer\":{\"type\":\"integer\"},"
     "\"kind\":{\"type\":\"string\",\"enum\":[\"discount\",\"credit\",\"refund\",\"gift\","
     "\"bonus\"]},\"amount\":{\"type\":\"number\",\"exclusiveMinimum\":true,\"minimum\":0,"
     "\"nullable\":true},\"currency\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\"},"
     "\"description\":{\"type\":\"string\",\"maxLength\":2000},\"reason\":{\"type\":"
     "\"string\",\"maxLength\":100}}}"},
    {"Compensation",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"ticket\":{"
     "\"type\":\"integer\",\"nullable\":true},\"customer_id\":{\"type\":\"integer\"},"
     "\"kind\":{\"type\":\"string\"},\"amount\":{\"type\":\"number\",\"nullable\":true},"
     "\"currency\":{\"type\":\"string\",\"nullable\":true},\"description\":{\"type\":"
     "\"string\",\"nullable\":true},\"reason\":{\"type\":\"string\"},\"issued_by\":{"
     "\"type\":\"object\"},\"status\":{\"type\":\"string\",\"enum\":[\"issued\","
     "\"pending_approval\",\"approved\",\"rejected\"]},\"decided_by\":{\"type\":\"integer\","
     "\"nullable\":true},\"decided_at\":{\"type\":\"string\",\"format\":\"date-time\","
     "\"nullable\":true},\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"}}}"},
    {"CompensationTotals",
     "{\"type\":\"object\",\"properties\":{\"by_month\":{\"type\":\"array\",\"items\":{"
     "\"type\":\"object\"}},\"by_reason\":{\"type\":\"array\",\"items\":{\"type\":"
     "\"object\"}},\"by_agent\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}},"
     "\"by_rule\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}}}}"},
    {"CompensationPolicy",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"authority\":{"
     "\"type\":\"object\",\"additionalProperties\":{\"type\":\"object\","
     "\"additionalProperties\":{\"type\":\"number\",\"minimum\":0}}},\"monthly_budget\":{"
     "\"type\":\"object\",\"additionalProperties\":{\"type\":\"number\",\"minimum\":0}}}}"},
    {"OrganizationCreate", "{\"type\":\"object\",\"required\":[\"name\"],\"additionalProperties\":"
                           "false,\"properties\":{\"name\":{\"type\":\"string\"}}}"},
};

static const openapi_op_t *openapi_find(const char *method, const char *pattern)
{
    for (size_t i = 0; i < SB_ARRAY_SIZE(openapi_ops); i++)
        if (strcmp(openapi_ops[i].method, method) == 0 &&
            strcmp(openapi_ops[i].pattern, pattern) == 0)
            return &openapi_ops[i];
    return NULL;
}

static json_t *openapi_ref(const char *name)
{
    char ref[96];
    snprintf(ref, sizeof(ref), "#/components/schemas/%s", name);
    return json_pack("{s:s}", "$ref", ref);
}

static json_t *openapi_content(const char *schema)
{
    return json_pack("{s:{s:o}}", "application/json", "schema", openapi_ref(schema));
}

static json_t *openapi_operation(const openapi_op_t *op, const char *pattern)
{
    char id[160], code[8];
    json_t *params = json_array();
    json_t *o;

    /* operationId: method and the pattern's literal words. */
    snprintf(id, sizeof(id), "%s", op->method);
    for (const char *p = pattern + 1; *p; p++) {
        size_t n = strlen(id);
        if (n + 2 >= sizeof(id))
            break;
        id[n] = (*p == '/' || *p == '{' || *p == '}' || *p == '.') ? '_' : *p;
        id[n + 1] = '\0';
    }
    for (const char *p = strchr(pattern, '{'); p; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        if (end == NULL)
            break;
        json_array_append_new(params, json_pack("{s:s%,s:s,s:b,s:{s:s}}", "name", p + 1,
                                                (size_t)(end - p - 1), "in", "path", "required", 1,
                                                "schema", "type", "string"));
    }
    snprintf(code, sizeof(code), "%d", op->status);
    json_t *ok = json_pack("{s:s}", "description", sb_http_status_text(op->status));
    if (op->result)
        json_object_set_new(ok, "content", openapi_content(op->result));
    o = json_pack("{s:s,s:s,s:[s],s:o,s:{s:o,s:{s:s,s:o}}}", "summary", op->summary, "operationId",
                  id, "tags", op->tag, "parameters", params, "responses", code, ok, "default",
                  "description", "error", "content", openapi_content("Error"));
    if (op->body)
        json_object_set_new(
            o, "requestBody",
            json_pack("{s:b,s:o}", "required", 1, "content", openapi_content(op->body)));
    if (op->public_route)
        json_object_set_new(o, "security", json_array());
    return o;
}

int sb_api_openapi_build(const sb_router_t *r, json_t **out, const char **missing)
{
    json_t *paths = json_object();
    json_t *schemas = json_object();

    *missing = NULL;
    for (size_t i = 0; i < sb_router_count(r); i++) {
        const char *pattern = sb_router_pattern(r, i);
        const char *method = sb_router_method(r, i);
        if (strncmp(pattern, "/debug/", 7) == 0 || (sb_router_flags(r, i) & SB_ROUTE_UNDOCUMENTED))
            continue;
        const openapi_op_t *op = openapi_find(method, pattern);
        if (op == NULL) {
            *missing = pattern;
            json_decref(paths);
            json_decref(schemas);
            return SB_ENOENT;
        }
        json_t *item = json_object_get(paths, pattern);
        if (item == NULL) {
            item = json_object();
            json_object_set_new(paths, pattern, item);
        }
        char lower[16];
        size_t k = 0;
        for (; method[k] && k < sizeof(lower) - 1; k++)
            lower[k] = (char)(method[k] | 0x20);
        lower[k] = '\0';
        json_object_set_new(item, lower, openapi_operation(op, pattern));
    }
    for (size_t i = 0; i < SB_ARRAY_SIZE(openapi_schemas); i++) {
        json_t *s = json_loads(openapi_schemas[i].schema, 0, NULL);
        sb_assert(s != NULL);
        json_object_set_new(schemas, openapi_schemas[i].name, s);
    }
    *out = json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:[{s:s}],s:o,s:{s:o,s:{s:{s:s,s:s}}},s:[{s:[]}]}", "openapi",
        "3.0.3", "info", "title", "Switchboard API", "version", "1", "description",
        "Customer-service server: tenants, agents, customers and tickets. Errors are "
        "{\"error\":{\"code\",\"message\"}}; lists are {\"items\",\"next_cursor\"}.",
        "servers", "url", "/", "paths", paths, "components", "schemas", schemas, "securitySchemes",
        "bearer", "type", "http", "scheme", "bearer", "security", "bearer");
    return 0;
}

static int openapi_get(sb_http_req_t *req, void *data)
{
    sb_api_t *api = data;
    json_t *doc;
    const char *missing;

    if (sb_api_openapi_build(api->router, &doc, &missing) != 0) {
        sb_log(SB_LOG_ERR, sb_http_req_log(req), "route \"%s\" has no API description", missing);
        return SB_EIO;
    }
    sb_http_respond_json(req, 200, doc);
    return 0;
}

int sb_api_openapi_routes_add(sb_router_t *r, sb_api_t *api)
{
    return sb_router_add(r, "GET", "/api/v1/openapi.json", 0, openapi_get, api);
}

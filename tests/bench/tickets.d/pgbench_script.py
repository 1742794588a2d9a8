#!/usr/bin/env python3
"""Writes the pgbench script of tests/bench/tickets: the SQL that one
POST /api/v1/tenants/{tenant}/tickets runs, copied at run time from the C
sources so that it cannot drift from them.

Usage: pgbench_script.py TOP MODE > script.sql
  TOP   the source tree (with server/api/call.c and server/api/tickets.c)
  MODE  pipeline  two pipelines, each one implicit transaction, as the
                  server sends them (server/db/README.md): authentication
                  (sb_api_begin), then the work (sb_api_tx + ticket_create_run)
        tx        the same statements in one BEGIN ... COMMIT, one round
                  trip each (more round trips than the server makes)

The statements mirror:
  server/api/call.c     sb_api_begin:      sql_session, sql_agent
                        sb_api_tx:         sql_enter
  server/api/tickets.c  ticket_create_run: sql_create; file level:
                                           sql_ticket_by_setting (SQL_TICKET_DETAIL(...))
Each $N becomes a pgbench variable (pgbench sends every :var as a
parameter under -M prepared, as the server does).  Variables, given with
-D by the caller: token_hash, tenant_slug, tenant_id, agent_id, kind, name,
subject, priority, tags, custom, text, customers.  The customer's email is
'cust' || :c || '@example.com' with \\set c random(1, :customers); the
HTML body is NULL (a JSON request without "html" passes NULL too); the API
key id is '' (an agent's session passes ""; pgbench has no empty
variables).  The role (switchboard_app) is the session's, set by the
caller with PGOPTIONS="-c role=switchboard_app", as the server's pool does
with SET ROLE once per connection.
"""
import re
import sys

LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
TOKEN = re.compile(r'\s*(?:"((?:[^"\\\n]|\\.)*)"|([A-Za-z_][A-Za-z0-9_]*)\s*(\()?|(\)))')


def fail(msg):
    sys.exit("pgbench_script.py: " + msg)


def unescape(s):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


def macros(src):
    """#define NAME(arg) "literal" arg "literal" ... -> (arg, tokens)."""
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)\((\w+)\)((?:.*\\\n)*.*)$", src, re.M):
        body = m.group(3).replace("\\\n", " ")
        out[m.group(1)] = (m.group(2), body)
    return out


def expand(expr, defs):
    """The text of a C initialiser made of string literals and one-argument
    macros whose bodies are literals and the argument."""
    text, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            if expr[pos:].strip() == "":
                break
            fail("cannot read the initialiser near: %r" % expr[pos : pos + 60])
        pos = m.end()
        if m.group(1) is not None:
            text.append(unescape(m.group(1)))
        elif m.group(2):
            name = m.group(2)
            if not m.group(3) or name not in defs:
                fail("unknown identifier %s in an SQL initialiser" % name)
            # The argument runs to the matching parenthesis.
            depth, i = 1, pos
            while depth and i < len(expr):
                lit = LITERAL.match(expr, i)
                if lit:
                    i = lit.end()
                    continue
                depth += {"(": 1, ")": -1}.get(expr[i], 0)
                i += 1
            arg = expand(expr[pos : i - 1], defs)
            pos = i
            param, body = defs[name]
            for tok in re.finditer(r'"((?:[^"\\\n]|\\.)*)"|(\w+)', body):
                if tok.group(1) is not None:
                    text.append(unescape(tok.group(1)))
                elif tok.group(2) == param:
                    text.append(arg)
                else:
                    fail("unexpected token %s in macro %s" % (tok.group(2), name))
        else:
            fail("unbalanced parenthesis in an SQL initialiser")
    return "".join(text)


def statement(path, function, name):
    """The SQL text of `static const char NAME[] = ...;` inside FUNCTION,
    or at file level when FUNCTION is None."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    scope = src
    if function is not None:
        fm = re.search(r"^[a-z].*\b%s\([^)]*\)\s*\n\{\n(.*?)^\}" % re.escape(function), src,
                       re.M | re.S)
        if fm is None:
            fail("function %s not found in %s" % (function, path))
        scope = fm.group(1)
    sm = re.search(r"static const char %s\[\]\s*=\s*(.*?);\s*\n" % re.escape(name), scope, re.S)
    if sm is None:
        fail("statement %s not found in %s (%s)" % (name, path, function))
    # The initialiser may contain ';' inside literals only at the end of a
    # line in no statement here; check that it parsed to the end.
    sql = expand(sm.group(1), macros(src))
    if not sql.strip():
        fail("statement %s in %s is empty" % (name, path))
    return sql


def bind(sql, params, label):
    """Replaces $N by params[N-1]; every $N must be known."""
    used = set()

    def sub(m):
        n = int(m.group(1))
        if n < 1 or n > len(params):
            fail("%s uses $%d, which this benchmark does not know: update "
                 "tests/bench/tickets.d/pgbench_script.py" % (label, n))
        used.add(n)
        return params[n - 1]

    out = re.sub(r"\$(\d+)", sub, sql)
    if used != set(range(1, len(params) + 1)):
        fail("%s no longer uses $%s: update tests/bench/tickets.d/pgbench_script.py"
             % (label, ", $".join(str(n) for n in sorted(set(range(1, len(params) + 1)) - used))))
    # pgbench would take any other ":word" for a variable.
    if re.search(r"(?<![:\w]):[A-Za-z_]", re.sub(r"'[^']*'", "''", sql)):
        fail("%s contains a ':name' that pgbench would substitute" % label)
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("pipeline", "tx"):
        fail("usage: pgbench_script.py TOP pipeline|tx")
    top, mode = sys.argv[1], sys.argv[2]
    call_c = top + "/server/api/call.c"
    tickets_c = top + "/server/api/tickets.c"

    email = "('cust' || :c || '@example.com')"
    auth = [
        bind(statement(call_c, "sb_api_begin", "sql_session"), [":token_hash"], "sql_session"),
        bind(statement(call_c, "sb_api_begin", "sql_agent"), [":tenant_slug"], "sql_agent"),
    ]
    work = [
        bind(statement(call_c, "sb_api_tx", "sql_enter"),
             [":tenant_id", ":agent_id", "''"], "sql_enter"),
        bind(statement(tickets_c, "ticket_create_run", "sql_create"),
             [":kind", email, ":name", ":subject", ":priority", ":tags", ":custom", ":text",
              "NULL"], "sql_create"),
        bind(statement(tickets_c, None, "sql_ticket_by_setting"), [], "sql_ticket_by_setting"),
    ]

    print("-- Generated by tests/bench/tickets.d/pgbench_script.py (mode %s) from" % mode)
    print("-- server/api/call.c and server/api/tickets.c: one ticket creation as the")
    print("-- server runs it for POST /api/v1/tenants/{tenant}/tickets.")
    print("\\set c random(1, :customers)")
    if mode == "pipeline":
        for batch, what in ((auth, "sb_api_begin"), (work, "sb_api_tx + ticket_create_run")):
            print("-- %s: one pipeline, one Sync, one implicit transaction" % what)
            print("\\startpipeline")
            for s in batch:
                print(s + ";")
            print("\\endpipeline")
    else:
        print("BEGIN;")
        for s in auth + work:
            print(s + ";")
        print("COMMIT;")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Waits until an LMTP listener accepts a recipient, for tests/bench/email.

usage: lmtp_ready.py HOST PORT RECIPIENT TIMEOUT_S

Each attempt is LHLO, MAIL FROM and RCPT TO, then RSET and QUIT: no DATA,
so nothing is stored.  Exits 0 at the first 250 for the recipient; 1 when
TIMEOUT_S has passed, after printing the last reply or error.  Standard
library only.
"""
import smtplib
import sys
import time


def attempt(host, port, rcpt):
    with smtplib.LMTP(host, port, timeout=5) as s:
        code, msg = s.ehlo("probe.bench.example")
        if code != 250:
            return False, "LHLO: %d %s" % (code, msg.decode(errors="replace"))
        code, msg = s.mail("probe@bench.example")
        if code != 250:
            return False, "MAIL: %d %s" % (code, msg.decode(errors="replace"))
        code, msg = s.rcpt(rcpt)
        s.rset()
        return code == 250, "RCPT: %d %s" % (code, msg.decode(errors="replace"))


def main():
    host, port, rcpt, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            ok, last = attempt(host, port, rcpt)
            if ok:
                return 0
        except (OSError, smtplib.SMTPException) as e:
            last = "%s: %s" % (type(e).__name__, e)
        time.sleep(0.2)
    print("%s:%d did not accept %s within %g s; last: %s" % (host, port, rcpt, timeout, last))
    return 1


if __name__ == "__main__":
    sys.exit(main())

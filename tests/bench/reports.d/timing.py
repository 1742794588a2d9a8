#!/usr/bin/python3
"""tests/bench/reports: times GET requests one after the other on one
keep-alive connection (standard library only), for the reports benchmark.
Not a load generator: one request in flight at a time.

    timing.py BASE TOKEN REQUESTS WARMUPS BUDGET TIMEOUT VARIANTS

Each line of the file VARIANTS is "report<TAB>variant<TAB>path".  Per variant: WARMUPS
untimed requests, then REQUESTS timed ones, from sending the request to
the last byte of the body, stopping early (after at least MIN_SAMPLES)
once BUDGET seconds have been spent on that variant.  Prints one line per
variant:

    bench-variant REPORT VARIANT STATUS SAMPLES P50_MS P99_MS MAX_MS BYTES

STATUS is the status of the timed responses ("200", or e.g. "404", "mixed",
"timeout", "error"); the percentiles are nearest-rank, over all timed
responses whatever their status.  A variant whose status is not 200 is
followed by "bench-body REPORT VARIANT <the first 300 bytes of a body>".
Exits non-zero only when the arguments or the input cannot be used.
"""

import http.client
import math
import socket
import sys
import time
import urllib.parse

MIN_SAMPLES = 5


class Client:
    def __init__(self, base, token, timeout):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.token = token
        self.timeout = timeout
        self.conn = None

    def get(self, path):
        """Returns (status, body, seconds); status is "timeout" or "error"
        when no response came."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            t0 = time.perf_counter()
            try:
                self.conn.request("GET", path, headers={"Authorization": "Bearer " + self.token})
                r = self.conn.getresponse()
                body = r.read()
                dt = time.perf_counter() - t0
                if r.will_close:
                    self.close()
                return str(r.status), body, dt
            except socket.timeout:
                self.close()
                return "timeout", b"", time.perf_counter() - t0
            except (http.client.HTTPException, OSError) as e:
                # A keep-alive connection the server closed meanwhile: retry
                # once on a new one.
                self.close()
                if attempt == 2:
                    return "error", str(e).encode(), time.perf_counter() - t0
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def nearest_rank(sorted_values, p):
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[k - 1]


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    base, token = sys.argv[1], sys.argv[2]
    n, warmups = int(sys.argv[3]), int(sys.argv[4])
    budget, timeout = float(sys.argv[5]), float(sys.argv[6])
    if n < 1 or warmups < 0 or budget <= 0 or timeout <= 0:
        sys.exit("timing.py: bad arguments")
    with open(sys.argv[7], encoding="utf-8") as f:
        lines = f.read().splitlines()
    client = Client(base, token, timeout)
    for line in lines:
        if not line:
            continue
        try:
            report, variant, path = line.split("\t")
        except ValueError:
            sys.exit("timing.py: bad input line: %r" % line)
        statuses, times, size, bad_body = [], [], 0, None
        gave_up = False
        for _ in range(warmups):
            status, body, _dt = client.get(path)
            if status in ("timeout", "error"):
                statuses.append(status)
                bad_body = body
                gave_up = True
                break
        spent = 0.0
        while not gave_up and len(times) < n:
            status, body, dt = client.get(path)
            statuses.append(status)
            if status in ("timeout", "error"):
                bad_body = body
                break
            times.append(dt)
            size = len(body)
            if status != "200" and bad_body is None:
                bad_body = body
            spent += dt
            if spent > budget and len(times) >= MIN_SAMPLES:
                break
        distinct = sorted(set(statuses))
        status = distinct[0] if len(distinct) == 1 else ("mixed" if distinct else "error")
        if times:
            s = sorted(times)
            p50, p99, mx = (nearest_rank(s, 50) * 1000, nearest_rank(s, 99) * 1000, s[-1] * 1000)
            figures = "%.1f %.1f %.1f" % (p50, p99, mx)
        else:
            figures = "- - -"
        print("bench-variant %s %s %s %d %s %d" % (report, variant, status, len(times), figures, size),
              flush=True)
        if status != "200":
            text = (bad_body or b"").decode("utf-8", "replace")[:300].replace("\n", " ")
            print("bench-body %s %s %s" % (report, variant, text), flush=True)
    client.close()


if __name__ == "__main__":
    main()

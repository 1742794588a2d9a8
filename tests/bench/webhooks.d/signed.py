"""Writes N signed WhatsApp Cloud API notifications for tests/bench/webhooks,
one a line: the X-Hub-Signature-256 value, a tab, the body.  Each carries a
new message id; senders cycle through CUSTOMERS numbers, so most messages
join the open ticket of a known customer, as on a real number.

    python3 signed.py APP_SECRET N CUSTOMERS > signed.txt
"""
import hashlib
import hmac
import json
import sys


def main():
    secret, n, customers = sys.argv[1].encode(), int(sys.argv[2]), int(sys.argv[3])
    out = sys.stdout
    for i in range(n):
        sender = str(31600000000 + i % customers)
        body = json.dumps({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"phone_number_id": "1122334455667"},
                "contacts": [{"profile": {"name": f"Customer {i % customers}"}, "wa_id": sender}],
                "messages": [{"from": sender, "id": f"wamid.bench{i:09d}",
                              "timestamp": "1700000000", "type": "text",
                              "text": {"body": "Where is my order? It was due yesterday."}}]}}]}],
        }, separators=(",", ":")).encode()
        sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        out.write(sig + "\t" + body.decode() + "\n")


if __name__ == "__main__":
    main()

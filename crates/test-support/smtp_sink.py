"""A real SMTP server for Trellis's tests (aiosmtpd).

Accepts mail on 127.0.0.1:<port> and writes each message as <name>.eml plus a
<name>.json with its envelope and decoded headers and parts. It can answer
the first N messages with a transient reply (e.g. 451) or every message with
a permanent one (e.g. 550). Prints READY when listening; runs until killed.
"""
import argparse
import email
import email.policy
import json
import os
import signal
import threading
import time
import uuid

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, outdir, fail_first, fail_reply, always_reply):
        self.outdir = outdir
        self.fail_first = fail_first
        self.fail_reply = fail_reply
        self.always_reply = always_reply
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.always_reply:
                return self.always_reply
            if self.fail_first > 0:
                self.fail_first -= 1
                return self.fail_reply
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)

        def part(kind):
            body = msg.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else None

        record = {
            "received_ns": time.time_ns(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "to_name": msg["to"].addresses[0].display_name if msg["to"] is not None else None,
            "to_addr": msg["to"].addresses[0].addr_spec if msg["to"] is not None else None,
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "text": part("plain"),
            "html": part("html"),
        }
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        with open(os.path.join(self.outdir, name + ".eml.tmp"), "wb") as f:
            f.write(raw)
        os.rename(os.path.join(self.outdir, name + ".eml.tmp"), os.path.join(self.outdir, name + ".eml"))
        with open(os.path.join(self.outdir, name + ".json.tmp"), "w") as f:
            json.dump(record, f)
        os.rename(os.path.join(self.outdir, name + ".json.tmp"), os.path.join(self.outdir, name + ".json"))
        return "250 2.0.0 OK: queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--fail-reply", default="451 4.3.0 Temporary failure, try again later")
    p.add_argument("--always-reply", default="")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    handler = Handler(a.dir, a.fail_first, a.fail_reply, a.always_reply)
    controller = Controller(handler, hostname="127.0.0.1", port=a.port)
    controller.start()
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()

"""A real SMTP listener for the mail tests (tests/src/smtp.rs).

Listens on 127.0.0.1:PORT (0: any free port) with aiosmtpd and stores every
message it accepts in DIR as two files named after the arrival:
`<n>.eml` (the raw message) and `<n>.json` (envelope, headers in order, and
the decoded text body). The JSON file is written last and atomically, so
its presence means the message is complete. Prints `listening on
127.0.0.1:PORT` on stdout once it accepts connections; runs until killed.

Usage: python3 smtp_sink.py --dir DIR [--port PORT]
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import sys
import time

from aiosmtpd.smtp import SMTP


class Store:
    """aiosmtpd handler: writes each message to the directory."""

    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if message.is_multipart():
            body = None
        else:
            body = message.get_content().replace("\r\n", "\n")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "headers": [[name, str(value)] for name, value in message.items()],
            "body": body,
        }
        # Nanoseconds and the pid keep names unique across restarts.
        name = f"{time.time_ns():020d}-{os.getpid()}"
        write_atomically(os.path.join(self.directory, name + ".eml"), raw)
        write_atomically(
            os.path.join(self.directory, name + ".json"),
            json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8"),
        )
        return "250 Message accepted for delivery"


def write_atomically(path, data):
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


async def serve(directory, port):
    loop = asyncio.get_running_loop()
    handler = Store(directory)
    # A fixed hostname: the default asks DNS for this machine's FQDN.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink.test"),
        host="127.0.0.1",
        port=port,
        reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    try:
        asyncio.run(serve(args.dir, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

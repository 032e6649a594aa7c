#!/usr/bin/python3
"""Sends one SIP OPTIONS over UDP and exits 0 if a 200 comes back (Debian's python, no packages).

Usage: sip-options-probe.py HOST PORT [TIMEOUT_S]. The switchboard role's health check: the
SIP edge answers out-of-dialog OPTIONS itself, so a 200 shows the edge is up and listening.
"""

import secrets
import socket
import sys


def probe(host: str, port: int, timeout: float) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        local, local_port = sock.getsockname()[:2]
        tag, branch = secrets.token_hex(6), "z9hG4bK" + secrets.token_hex(8)
        where = f"[{local}]" if ":" in local else local
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {where}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:health@{where}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(12)}@{where}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.send(request.encode())
        while True:
            reply = sock.recv(65535).decode(errors="replace")
            if branch in reply:  # ours, not a stray datagram
                return reply.split("\r\n", 1)[0]


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    try:
        status = probe(host, port, timeout)
    except OSError as exc:  # timeout, or ICMP port unreachable
        print(f"no answer to OPTIONS from {host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status.startswith("SIP/2.0 200") else 1


if __name__ == "__main__":
    sys.exit(main())

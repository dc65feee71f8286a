#!/usr/bin/env python3
"""A tiny local webhook receiver for the README tour: prints every JSON page fsincident posts.

Usage: python3 scripts/webhook-echo.py [PORT]   (default 9099, listens on 127.0.0.1 only)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            msg = json.loads(body)
            print(f"--- {msg.get('type', '')}: {msg.get('title', '')}\n{msg.get('message', '')}\n", flush=True)
        except ValueError:
            print(body.decode(errors="replace"), flush=True)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9099
    print(f"listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()

"""The shop's api: stores orders in redis (the `db` service) and reports its version.

GET /        {"service": "api", "version": ..., "orders": N}
POST /orders one more order: {"orders": N}
GET /healthz 200 once redis answers PING (the readiness probe), 503 otherwise
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import resp

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    """The version baked in at build time (`--build-arg VERSION=...`)."""
    try:
        with open(os.path.join(HERE, "VERSION")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return "dev"


def make_handler(db, app_version):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            try:
                if self.path == "/healthz":
                    self.reply(200, {"db": db.call("PING")})
                elif self.path == "/":
                    orders = int(db.call("GET", "orders") or 0)
                    self.reply(200, {"service": "api", "version": app_version, "orders": orders})
                else:
                    self.reply(404, {"error": f"no such path: {self.path}"})
            except (OSError, resp.RedisError) as e:
                self.reply(503, {"error": f"db: {e}"})

        def do_POST(self):
            if self.path != "/orders":
                self.reply(404, {"error": f"no such path: {self.path}"})
                return
            try:
                self.reply(201, {"orders": db.call("INCR", "orders")})
            except (OSError, resp.RedisError) as e:
                self.reply(503, {"error": f"db: {e}"})

        def log_message(self, fmt, *args):
            if not self.path.startswith("/healthz"):
                super().log_message(fmt, *args)

    return Handler


def serve(port, db_host, db_port):
    db = resp.Client(db_host, db_port)
    server = ThreadingHTTPServer(("", port), make_handler(db, version()))
    print(f"api {version()}: serving on :{port}, db at {db_host}:{db_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(os.environ.get("PORT", "8080")), os.environ.get("DB_HOST", "db"),
          int(os.environ.get("DB_PORT", "6379")))

"""The shop's front end: a page showing the api's version and order count, fetched from
http://api:8080/ by service name, and a form that places an order through the api.

GET /        the page (502 when the api cannot be reached)
POST /order  one more order through the api, then back to the page
GET /healthz 200 (the readiness probe: the front end itself is up)
"""

import html
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    """The version baked in at build time (`--build-arg VERSION=...`)."""
    try:
        with open(os.path.join(HERE, "VERSION")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return "dev"


def render(web_version, api):
    """The page for the api's answer `api` (a dict), every value escaped."""
    esc = lambda v: html.escape(str(v))  # noqa: E731
    return (
        "<!doctype html>\n<html><head><title>shop</title></head><body>\n"
        "<h1>shop</h1>\n"
        f"<p>web: {esc(web_version)}</p>\n"
        f"<p>api: {esc(api.get('version', '?'))}</p>\n"
        f"<p>orders: {esc(api.get('orders', '?'))}</p>\n"
        '<form method="post" action="/order"><button>order</button></form>\n'
        "</body></html>\n"
    )


def call_api(api_url, path, method="GET", timeout=3.0):
    req = urllib.request.Request(api_url.rstrip("/") + path, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def make_handler(api_url, web_version):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body, content_type="text/html; charset=utf-8"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                self.reply(200, "ok\n", "text/plain")
            elif self.path == "/":
                try:
                    self.reply(200, render(web_version, call_api(api_url, "/")))
                except (OSError, ValueError) as e:
                    self.reply(502, f"api at {api_url} unreachable: {html.escape(str(e))}\n")
            else:
                self.reply(404, "not found\n", "text/plain")

        def do_POST(self):
            if self.path != "/order":
                self.reply(404, "not found\n", "text/plain")
                return
            try:
                call_api(api_url, "/orders", method="POST")
            except (OSError, ValueError) as e:
                self.reply(502, f"api at {api_url} unreachable: {html.escape(str(e))}\n")
                return
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt, *args):
            if not self.path.startswith("/healthz"):
                super().log_message(fmt, *args)

    return Handler


def serve(port, api_url):
    server = ThreadingHTTPServer(("", port), make_handler(api_url, version()))
    print(f"web {version()}: serving on :{port}, api at {api_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(os.environ.get("PORT", "8080")), os.environ.get("API_URL", "http://api:8080"))

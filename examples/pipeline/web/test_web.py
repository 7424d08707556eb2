"""The front end's unit tests, run inside its image: the page escapes what the api says, and
the handler over loopback against a small api server that answers as the real api does."""

import json
import threading
import unittest
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import app


class Render(unittest.TestCase):
    def test_page_shows_versions_and_orders(self):
        page = app.render("w1", {"version": "a1", "orders": 7})
        self.assertIn("<p>web: w1</p>", page)
        self.assertIn("<p>api: a1</p>", page)
        self.assertIn("<p>orders: 7</p>", page)

    def test_values_are_escaped(self):
        page = app.render("w", {"version": "<script>", "orders": 1})
        self.assertIn("&lt;script&gt;", page)
        self.assertNotIn("<script>", page)


class FakeApi(BaseHTTPRequestHandler):
    """Answers GET / and POST /orders with the api's JSON shapes, counting in memory."""

    orders = 0

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200, {"service": "api", "version": "a9", "orders": FakeApi.orders})

    def do_POST(self):
        FakeApi.orders += 1
        self.reply(201, {"orders": FakeApi.orders})

    def log_message(self, *args):
        pass


def start(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Handler(unittest.TestCase):
    def test_page_and_order_through_the_api(self):
        api, api_url = start(FakeApi)
        web, web_url = start(app.make_handler(api_url, "w2"))
        try:
            with urllib.request.urlopen(web_url + "/", timeout=5) as r:
                self.assertIn("<p>api: a9</p>", r.read().decode())
            before = FakeApi.orders
            req = urllib.request.Request(web_url + "/order", method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                # urllib follows the 303 back to the page, which shows the new count.
                self.assertIn(f"<p>orders: {before + 1}</p>", r.read().decode())
        finally:
            for server in (web, api):
                server.shutdown()
                server.server_close()

    def test_unreachable_api_is_502(self):
        api, api_url = start(FakeApi)
        api.shutdown()
        api.server_close()
        web, web_url = start(app.make_handler(api_url, "w"))
        try:
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(web_url + "/", timeout=5)
            e.exception.close()
            self.assertEqual(e.exception.code, 502)
        finally:
            web.shutdown()
            web.server_close()


if __name__ == "__main__":
    unittest.main()

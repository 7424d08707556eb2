"""The api's unit tests, run inside its image (`berth run IMAGE python3 -m unittest ...`): the
RESP codec on bytes, then the HTTP handler against a real redis-server (from the Debian base)
started on a free loopback port."""

import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import app
import resp


class Codec(unittest.TestCase):
    def test_encode_is_an_array_of_bulk_strings(self):
        self.assertEqual(resp.encode("SET", "k", 12), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n")

    def test_every_reply_type(self):
        stream = io.BytesIO(b"+PONG\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n")
        self.assertEqual(resp.read_reply(stream), "PONG")
        self.assertEqual(resp.read_reply(stream), 42)
        self.assertEqual(resp.read_reply(stream), b"abc")
        self.assertIsNone(resp.read_reply(stream))
        self.assertEqual(resp.read_reply(stream), [1, b"x"])

    def test_error_and_truncated_replies_raise(self):
        with self.assertRaisesRegex(resp.RedisError, "ERR wrong"):
            resp.read_reply(io.BytesIO(b"-ERR wrong\r\n"))
        with self.assertRaisesRegex(resp.RedisError, "closed"):
            resp.read_reply(io.BytesIO(b"$10\r\nabc"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WithRedis(unittest.TestCase):
    """The handler end to end over loopback, with a real redis-server."""

    @classmethod
    def setUpClass(cls):
        server = shutil.which("redis-server")
        if server is None:
            raise AssertionError("redis-server is missing from the image (the Debian base has it)")
        cls.tmp = tempfile.mkdtemp()
        cls.redis_port = free_port()
        cls.redis = subprocess.Popen(
            [server, "--port", str(cls.redis_port), "--bind", "127.0.0.1", "--dir", cls.tmp,
             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        db = resp.Client("127.0.0.1", cls.redis_port)
        deadline = time.monotonic() + 10
        while True:
            try:
                db.call("PING")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cls.http = ThreadingHTTPServer(("127.0.0.1", 0), app.make_handler(db, "v-test"))
        threading.Thread(target=cls.http.serve_forever, daemon=True).start()
        cls.base = f"http://127.0.0.1:{cls.http.server_address[1]}"

    @classmethod
    def tearDownClass(cls):
        cls.http.shutdown()
        cls.http.server_close()
        cls.redis.terminate()
        cls.redis.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def get(self, path, method="GET"):
        req = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)

    def test_orders_are_counted_in_redis(self):
        _, before = self.get("/")
        self.assertEqual(before["version"], "v-test")
        status, placed = self.get("/orders", method="POST")
        self.assertEqual(status, 201)
        self.assertEqual(placed["orders"], before["orders"] + 1)
        _, after = self.get("/")
        self.assertEqual(after["orders"], before["orders"] + 1)

    def test_healthz_pings_the_db(self):
        self.assertEqual(self.get("/healthz"), (200, {"db": "PONG"}))

    def test_unknown_path_is_404(self):
        with self.assertRaises(urllib.error.HTTPError) as e:
            self.get("/nope")
        e.exception.close()
        self.assertEqual(e.exception.code, 404)


class WithoutRedis(unittest.TestCase):
    def test_healthz_fails_when_the_db_is_down(self):
        db = resp.Client("127.0.0.1", free_port(), timeout=0.5)
        http = ThreadingHTTPServer(("127.0.0.1", 0), app.make_handler(db, "v"))
        threading.Thread(target=http.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{http.server_address[1]}/healthz"
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url, timeout=5)
            e.exception.close()
            self.assertEqual(e.exception.code, 503)
        finally:
            http.shutdown()
            http.server_close()


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    unittest.main()

"""A tiny RESP (REdis Serialization Protocol) client: enough for PING, GET, SET and INCR."""

import socket


class RedisError(Exception):
    """An error reply from the server (`-ERR ...`) or a broken connection."""


def encode(*args):
    """A command as RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_reply(stream):
    """One reply from a file-like `stream` (bytes): str, int, bytes, None or a list."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise RedisError("connection closed mid-reply")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [read_reply(stream) for _ in range(count)]
    raise RedisError(f"unexpected reply type {kind!r}")


class Client:
    """One connection per call: the api is small and redis is on the same network."""

    def __init__(self, host, port, timeout=2.0):
        self.host, self.port, self.timeout = host, port, timeout

    def call(self, *args):
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(encode(*args))
            with sock.makefile("rb") as stream:
                return read_reply(stream)

"""A hand-made HTTP/2 gRPC client that misbehaves on purpose: it sends a call's headers and part of
its message, then hangs up or stalls. grpcio cannot do either (it sends whole messages).

    with RawGrpcCall("127.0.0.1", 8500, "/tensorflow.serving.PredictionService/Predict") as call:
        call.send_headers()
        call.send_partial_message(request_bytes, keep=10)   # the length prefix says all, 10 bytes follow
        status = call.wait_for_end(timeout=15)               # or call.abort(): close mid-message

Only what these clients need: the connection preface, SETTINGS (and ACKs of the server's SETTINGS and
PINGs), one HEADERS frame encoded with HPACK literals (no Huffman, no table), DATA frames, and
reading the server's frames until it ends stream 1. The grpc-status of the server's trailers is
found in the raw header block: on a fresh connection gRPC's encoder writes it as a literal
(``grpc-status`` then the digits), which is all :func:`grpc_status_in` reads; None if not found.
"""
from __future__ import annotations

import re
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
STREAM = 1
_GRPC_STATUS = re.compile(rb"\x0bgrpc-status([\x01-\x03])")


def frame(frame_type, flags, stream, payload=b""):
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    if len(payload) >= 1 << 24:
        raise ValueError(f"frame payload of {len(payload)} bytes is over HTTP/2's 16 MiB maximum")
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream) + payload


def literal_header(name, value):
    """HPACK 'literal header field without indexing, new name', both strings raw (no Huffman)."""
    name, value = name.encode("ascii"), value.encode("ascii")
    for text in (name, value):
        if len(text) >= 127:
            raise ValueError(f"header text {text[:40]!r}... of {len(text)} bytes needs a multi-byte HPACK length")
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def grpc_message(payload):
    """gRPC's length-prefixed message: a compressed flag (0) and a 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_status_in(header_block):
    """The grpc-status in a raw HPACK header block if written as a literal, else None."""
    match = _GRPC_STATUS.search(header_block)
    if not match:
        return None
    start = match.end()
    digits = header_block[start:start + match.group(1)[0]]
    return int(digits) if digits.isdigit() else None


class RawGrpcCall:
    """One gRPC call on its own TCP connection, driven frame by frame."""

    def __init__(self, host, port, path, connect_timeout=10.0):
        self.host, self.port, self.path = host, int(port), path
        self.sock = socket.create_connection((host, self.port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_headers(self):
        block = b"".join(literal_header(name, value) for name, value in (
            (":method", "POST"), (":scheme", "http"), (":path", self.path),
            (":authority", f"{self.host}:{self.port}"), ("content-type", "application/grpc"), ("te", "trailers")))
        self.sock.sendall(frame(HEADERS, END_HEADERS, STREAM, block))

    def send_partial_message(self, payload, keep):
        """A DATA frame holding the message's length prefix (all of `payload`) and its first `keep` bytes."""
        if not 0 <= keep < len(payload):
            raise ValueError(f"keep={keep} must be in [0, {len(payload)}) to cut the {len(payload)}-byte message")
        self.sock.sendall(frame(DATA, 0, STREAM, grpc_message(payload)[:5 + keep]))

    def send_partial_frame(self, payload, keep):
        """A DATA frame header announcing the whole message, followed by only `keep` bytes of the frame."""
        whole = frame(DATA, END_STREAM, STREAM, grpc_message(payload))
        if not 0 <= keep < len(whole) - 9:
            raise ValueError(f"keep={keep} must be in [0, {len(whole) - 9}) to cut the frame")
        self.sock.sendall(whole[:9 + keep])

    def abort(self, reset=False):
        """Hangs up at once; `reset` closes with a TCP RST (SO_LINGER 0) instead of a FIN."""
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_for_end(self, timeout):
        """How the server ended stream 1 within `timeout` s, answering its SETTINGS and PINGs meanwhile:
        ("trailers", grpc-status or None), ("reset", error code), ("goaway", error code), ("closed", None)
        when it closed the connection, or ("timeout", None)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            self.sock.settimeout(remaining)
            try:
                header = self._read(9)
                length, frame_type, flags = int.from_bytes(header[:3], "big"), header[3], header[4]
                stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                payload = self._read(length)
            except socket.timeout:
                return "timeout", None
            except (EOFError, ConnectionError):
                return "closed", None
            if frame_type == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            elif frame_type == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            elif frame_type == HEADERS and stream == STREAM and flags & END_STREAM:
                return "trailers", grpc_status_in(payload)
            elif frame_type == RST_STREAM and stream == STREAM:
                return "reset", int.from_bytes(payload[:4], "big")
            elif frame_type == GOAWAY:
                return "goaway", int.from_bytes(payload[4:8], "big")

    def _read(self, n):
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

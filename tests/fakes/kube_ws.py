"""pods/exec and pods/attach over WebSocket for the fake API server; stdlib only.

Server side of RFC 6455 (handshake, masked client frames, fragmentation, ping/pong, close) and
of the Kubernetes channel sub-protocols `v5.channel.k8s.io` and `v4.channel.k8s.io`: every
binary message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize);
v5 adds the close signal `[255, channel]`, which is how a client ends stdin without closing
the socket. The first protocol the client offers that is supported wins, as on the real server.
Commands are never run: a registered `ExecHandler` answers for the container.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
PROTOCOLS = (V5, V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE_SIGNAL = 0, 1, 2, 3, 4, 255
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 32 * 1024
_DRAIN_SECONDS = 2.0

ExecHandler = Callable[[str, str, str, list[str], bytes], tuple[int, bytes | str, bytes | str]]
"""(namespace, pod, container, argv, stdin) -> (exit code, stdout, stderr)."""


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """What the client asked for (query of pods/{name}/exec or /attach)."""

    kind: str  # "exec" or "attach"
    namespace: str
    pod: str
    container: str
    argv: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass(slots=True)
class ExecCall:
    """One exec/attach as the fake saw it; in `FakeKubeAPI.execs` once the handler answered
    (stdin that arrives later, e.g. with `wait_stdin=False`, is still appended)."""

    kind: str
    namespace: str
    pod: str
    container: str
    argv: list[str]
    tty: bool
    protocol: str
    stdin: bytes = b""
    stdin_closed_by: str = ""  # "signal" (v5 close), "close" (socket), "" (not read)
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] = field(default_factory=dict)
    resizes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExecRoute:
    """A registered handler and the calls it answers (None matches anything)."""

    handler: ExecHandler
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    argv0: str | None = None
    wait_stdin: bool = True

    def matches(self, request: ExecRequest) -> bool:
        argv0 = request.argv[0] if request.argv else None
        return all(want is None or want == got for want, got in (
            (self.namespace, request.namespace), (self.pod, request.pod),
            (self.container, request.container), (self.argv0, argv0)))


# --- RFC 6455 -------------------------------------------------------------------------------


def accept_key(key: str) -> str:
    digest = hashlib.sha1((key + _GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def is_upgrade(handler: BaseHTTPRequestHandler) -> bool:
    return handler.headers.get("Upgrade", "").lower() == "websocket"


def handshake(handler: BaseHTTPRequestHandler) -> str | None:
    """Answer 101 with the first offered channel protocol we speak, or 403 and None."""
    offered = [p.strip() for p in handler.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    chosen = next((p for p in offered if p in PROTOCOLS), None)
    key = handler.headers.get("Sec-WebSocket-Key")
    if chosen is None or not key:
        handler.send_response(403)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return None
    handler.send_response(101)
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(key))
    handler.send_header("Sec-WebSocket-Protocol", chosen)
    handler.end_headers()
    return chosen


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    size = len(data)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


class WebSocket:
    """Frame-level server end of one connection."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self._rfile = rfile
        self._wfile = wfile
        self.close_sent = False

    def _read(self, size: int) -> bytes | None:
        try:
            data = self._rfile.read(size) if size else b""
        except (OSError, ValueError):
            return None
        return data if data is not None and len(data) == size else None

    def _read_frame(self) -> tuple[bool, int, bytes] | None:
        head = self._read(2)
        if head is None:
            return None
        fin, opcode, masked, size = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
        if size in (126, 127):
            raw = self._read(2 if size == 126 else 8)
            if raw is None:
                return None
            size = struct.unpack("!H" if len(raw) == 2 else "!Q", raw)[0]
        mask = self._read(4) if masked else b""
        payload = self._read(size)
        if mask is None or payload is None:
            return None
        return bool(fin), opcode, _unmask(payload, mask) if masked else payload

    def recv(self) -> tuple[int, bytes] | None:
        """The next data message or close frame; pings are answered. None at EOF."""
        parts: list[bytes] = []
        opcode = OP_BINARY
        while True:
            frame = self._read_frame()
            if frame is None:
                return None
            fin, op, payload = frame
            if op == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                return OP_CLOSE, payload
            opcode = opcode if op == OP_CONT else op
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        try:
            self._wfile.write(head + payload)
            self._wfile.flush()
        except OSError:
            pass

    def send_channel(self, channel: int, data: bytes) -> None:
        for start in range(0, max(len(data), 1), _CHUNK):
            self.send(OP_BINARY, bytes([channel]) + data[start:start + _CHUNK])

    def close(self, payload: bytes = struct.pack("!H", 1000)) -> None:
        if not self.close_sent:
            self.close_sent = True
            self.send(OP_CLOSE, payload)


# --- the exec session -----------------------------------------------------------------------


def serve(handler: BaseHTTPRequestHandler, protocol: str, request: ExecRequest,
          route: ExecRoute | None, record: Callable[[ExecCall], None]) -> None:
    """Run one upgraded exec/attach connection to its end. `record` gets the call as soon as
    the handler has answered, before the client can see the results."""
    handler.connection.settimeout(30)
    ws = WebSocket(handler.rfile, handler.wfile)
    call = ExecCall(request.kind, request.namespace, request.pod, request.container,
                    list(request.argv), request.tty, protocol)
    ws.send_channel(_first_channel(request), b"")  # tells the client the streams are open
    client_gone = False
    if request.stdin and route is not None and route.wait_stdin:
        client_gone = _read_stdin(ws, protocol, call)
    _run(route, request, call)
    record(call)
    if not client_gone:
        _send_results(ws, request, call)
        ws.close()
        _drain(ws, handler, protocol, call)


def _first_channel(request: ExecRequest) -> int:
    if request.stdout:
        return STDOUT
    return STDERR if request.stderr else ERROR


def _read_stdin(ws: WebSocket, protocol: str, call: ExecCall) -> bool:
    """Collect stdin until v5 closes channel 0 (False) or the client goes away (True)."""
    while True:
        message = ws.recv()
        if message is None:
            call.stdin_closed_by = "close"
            return True
        opcode, data = message
        if opcode == OP_CLOSE:
            ws.close(data[:2] or struct.pack("!H", 1000))
            call.stdin_closed_by = "close"
            return True
        if _take_frame(protocol, call, data):
            call.stdin_closed_by = "signal"
            return False


def _take_frame(protocol: str, call: ExecCall, data: bytes) -> bool:
    """File one client data message; True when it is the v5 end-of-stdin signal."""
    if not data:
        return False
    channel, payload = data[0], data[1:]
    if channel == STDIN:
        call.stdin += payload
    elif channel == RESIZE and payload:
        call.resizes.append(json.loads(payload))
    elif channel == CLOSE_SIGNAL and protocol == V5:
        return payload[:1] == bytes([STDIN])
    return False


def _run(route: ExecRoute | None, request: ExecRequest, call: ExecCall) -> None:
    if route is None:
        if request.kind == "attach":
            call.exit_code, call.status = 0, {"metadata": {}, "status": "Success"}
            return
        argv0 = request.argv[0] if request.argv else ""
        call.status = _internal(f'failed to exec in container: exec: "{argv0}": executable '
                                "file not found in $PATH: unknown")
        return
    try:
        code, out, err = route.handler(request.namespace, request.pod, request.container,
                                       list(request.argv), call.stdin)
    except Exception as exc:  # noqa: BLE001 - a failing handler becomes the container's error
        call.status = _internal(str(exc))
        return
    call.exit_code = int(code)
    call.stdout = out.encode() if isinstance(out, str) else bytes(out)
    call.stderr = err.encode() if isinstance(err, str) else bytes(err)
    call.status = _exit_status(call.exit_code, request.argv)


def _exit_status(code: int, argv: tuple[str, ...]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    command = "[" + " ".join(argv) + "]"
    return {
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
                   f"{command}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _internal(message: str) -> dict[str, Any]:
    text = f"error executing command in container: {message}"
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {text}",
            "reason": "InternalError", "details": {"causes": [{"message": text}]}, "code": 500}


def _send_results(ws: WebSocket, request: ExecRequest, call: ExecCall) -> None:
    out, err = call.stdout, call.stderr
    if request.tty:  # a terminal has one output stream
        out, err = out + err, b""
    if request.stdout and out:
        ws.send_channel(STDOUT, out)
    if request.stderr and err:
        ws.send_channel(STDERR, err)
    ws.send_channel(ERROR, json.dumps(call.status, separators=(",", ":")).encode())


def _drain(ws: WebSocket, handler: BaseHTTPRequestHandler, protocol: str,
           call: ExecCall) -> None:
    """Wait briefly for the client's close reply, still filing late stdin and resizes."""
    handler.connection.settimeout(_DRAIN_SECONDS)
    while (message := ws.recv()) is not None and message[0] != OP_CLOSE:
        _take_frame(protocol, call, message[1])

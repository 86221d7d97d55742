"""The device agent: a small HTTP server on the target board that times ONNX graphs, and its client.

The target device is usually not the machine running the search. The agent
runs on it (``iotnas agent serve`` or ``python -m iotnas.latency.agent``) and
needs only the standard library, NumPy and ONNX Runtime: it never imports
torch and never unpickles anything. Requests are JSON; ONNX graphs travel as
base64 text inside the JSON. Every request carries ``Authorization: Bearer
<token>``, compared in constant time; requests are capped in size, reading a
request is capped in time, and each timing process is killed past a time limit.
Timings run one at a time, so concurrent requests never disturb each other.

Endpoints: ``GET /health`` (the device's environment) and ``POST /measure``
(``{"protocol": {...}, "isolate": bool, "jobs": [{"onnx_b64": ..., "target": ...,
"settings": {...}}]}`` -> ``{"results": [{"measurement": {...}} | {"error": ...}]}``).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import logging
import os
import socket
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from iotnas import __version__
from iotnas.errors import AgentError, IotnasError, LatencyError
from iotnas.latency.measure import LatencyMeasurement, Protocol, environment
from iotnas.latency.runtimes import OrtSettings, onnx_target
from iotnas.latency.worker import decode_onnx, run_jobs

log = logging.getLogger(__name__)

MIB = 1 << 20
#: Largest request body accepted; a 1,617-model study's biggest graph is ~60 MB as base64.
DEFAULT_MAX_REQUEST_BYTES = 128 * MIB
#: Seconds one timing process may run before it is killed.
DEFAULT_TIME_LIMIT_S = 300.0
#: Seconds a client may take to send its request (guards against stalled connections).
READ_TIMEOUT_S = 30.0
TOKEN_ENV = "IOTNAS_AGENT_TOKEN"


def read_token(token_file: str | Path | None = None) -> str | None:
    """The agent token from ``token_file``, else from ``$IOTNAS_AGENT_TOKEN``, else None.

    Raises:
        AgentError: the file cannot be read or is empty.
    """
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AgentError(f"cannot read the token file {token_file}: {exc.strerror}") from exc
        if not token:
            raise AgentError(f"the token file {token_file} is empty; write a secret token into it")
        return token
    return os.environ.get(TOKEN_ENV) or None


class _Refused(Exception):
    """A request the agent answers with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AgentServer:
    """The agent's HTTP server (``ThreadingHTTPServer``); bind with ``port=0`` for an ephemeral port."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        token: str,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    ) -> None:
        if not token:
            raise AgentError("the agent needs a non-empty token; pass --token-file")
        self.token = token
        self.max_request_bytes = max_request_bytes
        self.time_limit_s = time_limit_s
        self._timing_lock = threading.Lock()
        handler = type("_BoundHandler", (_Handler,), {"agent": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise AgentError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        self._httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def shutdown(self) -> None:
        self._httpd.shutdown()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "iotnas": __version__, "runtimes": ["onnxruntime"], "environment": environment()}

    def measure(self, request: Any) -> dict[str, Any]:
        """Check a /measure request, then time its jobs in fresh processes, one request at a time."""
        if not isinstance(request, dict) or not isinstance(request.get("jobs"), list) or not request["jobs"]:
            raise _Refused(400, "request must be a JSON object with a non-empty 'jobs' list")
        unknown = sorted(set(request) - {"jobs", "protocol", "isolate"})
        if unknown:
            raise _Refused(400, f"unknown request keys {unknown}")
        try:
            protocol = Protocol.from_dict(request.get("protocol", {}))
            for job in request["jobs"]:
                if not isinstance(job, dict) or job.get("runtime", "onnxruntime") != "onnxruntime":
                    raise LatencyError("each job must be a JSON object for the onnxruntime runtime")
                decode_onnx(job)
                OrtSettings.from_dict(job.get("settings", {}))
        except LatencyError as exc:
            raise _Refused(400, str(exc)) from exc
        jobs = request["jobs"]
        groups = [[job] for job in jobs] if request.get("isolate", True) else [jobs]
        results: list[dict[str, Any]] = []
        with self._timing_lock:
            for group in groups:
                try:
                    done = run_jobs(group, protocol=protocol, timeout_s=self.time_limit_s)
                except LatencyError as exc:
                    raise _Refused(500, str(exc)) from exc
                results += [
                    {"measurement": r.to_dict()} if isinstance(r, LatencyMeasurement) else {"error": str(r)}
                    for r in done
                ]
        return {"results": results}


class _Handler(BaseHTTPRequestHandler):
    agent: AgentServer
    timeout = READ_TIMEOUT_S
    protocol_version = "HTTP/1.1"
    server_version = "iotnas-agent"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        log.info("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> None:
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.encode(), self.agent.token.encode()):
            raise _Refused(401, "missing or wrong token")

    def _serve(self, route: Any) -> None:
        try:
            self._authorised()
            self._reply(200, route())
        except _Refused as exc:
            self.close_connection = self.close_connection or exc.status in (400, 401, 411, 413)
            self._reply(exc.status, {"error": str(exc)})
        except Exception as exc:  # process edge: log, answer 500, keep serving
            log.exception("request failed")
            self.close_connection = True
            self._reply(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/health":
            self.close_connection = True
            self._reply(404, {"error": f"no such endpoint {self.path}; use GET /health or POST /measure"})
            return
        self._serve(self.agent.health)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/measure":
            self.close_connection = True
            self._reply(404, {"error": f"no such endpoint {self.path}; use GET /health or POST /measure"})
            return
        self._serve(lambda: self.agent.measure(self._read_json()))

    def _read_json(self) -> Any:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            raise _Refused(411, "a Content-Length header is required")
        length = int(length_text)
        if length > self.agent.max_request_bytes:
            raise _Refused(413, f"request of {length} bytes exceeds the limit of {self.agent.max_request_bytes}")
        try:
            body = self.rfile.read(length)
        except (TimeoutError, socket.timeout) as exc:
            raise _Refused(408, f"request body not received within {READ_TIMEOUT_S:.0f} s") from exc
        if len(body) != length:
            raise _Refused(400, "request body shorter than its Content-Length")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Refused(400, f"request body is not valid JSON: {exc}") from exc


class AgentClient:
    """Talks to an agent over HTTP (urllib); every failure becomes an :class:`AgentError`."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 600.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise AgentError(f"device URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def connect(cls, url: str, *, token_file: str | Path | None = None, timeout_s: float = 600.0) -> AgentClient:
        """A client whose token comes from ``token_file`` or ``$IOTNAS_AGENT_TOKEN``."""
        return cls(url, token=read_token(token_file), timeout_s=timeout_s)

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (json.JSONDecodeError, AttributeError, OSError):
                message = exc.reason
            if exc.code == 401:
                hint = "" if self.token else f" (no token given: use --token-file or set {TOKEN_ENV})"
                raise AgentError(f"agent at {self.url} refused the request: {message}{hint}") from exc
            raise AgentError(f"agent at {self.url} answered HTTP {exc.code}: {message}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise AgentError(f"agent at {self.url} did not answer within {self.timeout_s:.0f} s") from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError | socket.timeout):
                raise AgentError(f"agent at {self.url} did not answer within {self.timeout_s:.0f} s") from exc
            if isinstance(reason, ConnectionResetError | BrokenPipeError):
                raise AgentError(
                    f"agent at {self.url} broke off the connection ({reason}); the request may exceed its size limit"
                ) from exc
            raise AgentError(
                f"cannot reach the agent at {self.url}: {reason}; is `iotnas agent serve` running there?"
            ) from exc
        except (ConnectionError, json.JSONDecodeError) as exc:
            raise AgentError(f"agent at {self.url} broke off or answered malformed JSON: {exc}") from exc

    def health(self) -> dict[str, Any]:
        """The agent's status and its device's environment."""
        return self._call("GET", "/health")

    def measure_onnx(
        self,
        graphs: list[tuple[bytes, str | None]],
        *,
        settings: OrtSettings = OrtSettings(),
        protocol: Protocol = Protocol(),
        isolate: bool = True,
    ) -> list[LatencyMeasurement | LatencyError]:
        """Time ONNX graphs (``(bytes, target name or None)``) on the device with ONNX Runtime.

        Args:
            isolate: one fresh timing process per graph (else one for all of them).

        Returns:
            One measurement, or the error it raised, per graph, in order.
        """
        jobs = [
            {
                "runtime": "onnxruntime",
                "onnx_b64": base64.b64encode(data).decode("ascii"),
                "target": target or onnx_target(data),
                "settings": settings.to_dict(),
            }
            for data, target in graphs
        ]
        reply = self._call("POST", "/measure", {"protocol": protocol.to_dict(), "isolate": isolate, "jobs": jobs})
        try:
            results = reply["results"]
            return [
                LatencyMeasurement.from_dict(r["measurement"]) if "measurement" in r else AgentError(r["error"])
                for r in results
            ]
        except (KeyError, TypeError) as exc:
            raise AgentError(f"agent at {self.url} answered an unexpected reply: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """``python -m iotnas.latency.agent``: serve without the training stack (no typer, no torch)."""
    parser = argparse.ArgumentParser(prog="python -m iotnas.latency.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / MIB)
    parser.add_argument("--time-limit-s", type=float, default=DEFAULT_TIME_LIMIT_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        server = AgentServer(
            host=args.host,
            port=args.port,
            token=read_token(args.token_file) or "",
            max_request_bytes=int(args.max_request_mb * MIB),
            time_limit_s=args.time_limit_s,
        )
    except IotnasError as exc:
        sys.stderr.write(f"iotnas agent: error: {exc}\n")
        return 2
    host, port = server.address
    sys.stdout.write(f"listening on http://{host}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

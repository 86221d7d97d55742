"""The device agent: a small HTTP server on the target board that times ONNX graphs, and its client.

The target device is usually not the machine running the search. The agent
runs on it (``iotnas agent serve`` or ``python -m iotnas.latency.agent``) and
needs only the standard library, NumPy and ONNX Runtime: it never imports
torch and never unpickles anything. Requests are JSON; ONNX graphs travel as
base64 text inside the JSON. Every request carries ``Authorization: Bearer
<token>``, compared in constant time. Whatever a client sends is bounded (see
:class:`AgentLimits`): request size, the time to send it, open connections,
and each timing process's run time and memory. Timings run one at a time, so
concurrent requests never disturb each other. The agent logs one line per
request (client, method, path, status, duration), never a header.

Endpoints: ``GET /health`` (the device's environment and its stable identity, see
:func:`device_identity`) and ``POST /measure``
(``{"protocol": {...}, "isolate": bool, "jobs": [{"onnx_b64": ..., "target": ...,
"settings": {...}}]}`` -> ``{"results": [{"measurement": {...}} | {"error": ...}]}``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from iotnas import __version__
from iotnas.errors import AgentError, IotnasError, LatencyError
from iotnas.latency.measure import (
    LatencyMeasurement,
    Protocol,
    brief,
    check_bool,
    check_int,
    check_keys,
    check_number,
    environment,
)
from iotnas.latency.runtimes import OrtSettings, onnx_target
from iotnas.latency.worker import MemoryLimitError, parse_onnx_job, run_jobs

log = logging.getLogger(__name__)

MIB = 1 << 20
#: Largest request body accepted (MiB); a 1,617-model study's biggest graph is ~60 MB as base64.
DEFAULT_MAX_REQUEST_MB = 128.0
#: Seconds one timing process may run before it is killed.
DEFAULT_TIME_LIMIT_S = 300.0
#: Seconds a client has to send a whole request: request line, headers and body.
DEFAULT_READ_DEADLINE_S = 30.0
#: Connections served at once; each holds a thread.
DEFAULT_MAX_CONNECTIONS = 32
#: Most jobs in one /measure request (the client splits larger batches).
MAX_JOBS = 256
MAX_TOKEN_CHARS = 4096
TOKEN_ENV = "IOTNAS_AGENT_TOKEN"
_TOKEN_CHARS = frozenset(map(chr, range(0x21, 0x7F)))  # visible ASCII: safe in a header, a file, a shell


def default_memory_limit_mb() -> int:
    """Half the device's RAM, within 1 to 4 GiB (below 1 GiB ONNX Runtime's threads and arenas may not fit)."""
    try:
        ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    except (AttributeError, ValueError, OSError):  # no sysconf: not a POSIX board
        return 4096
    return max(1024, min(4096, ram_mb // 2))


@dataclasses.dataclass(frozen=True, slots=True)
class AgentLimits:
    """What one client may cost the device; the fields are ``agent serve``'s options of the same names.

    Each is checked against stated bounds, so a slip such as ``inf`` or ``0``
    cannot switch a limit off.
    """

    max_request_mb: float = DEFAULT_MAX_REQUEST_MB  # larger bodies get 413 unread
    time_limit_s: float = DEFAULT_TIME_LIMIT_S  # per timing process
    memory_limit_mb: int = dataclasses.field(default_factory=default_memory_limit_mb)  # per timing process
    read_deadline_s: float = DEFAULT_READ_DEADLINE_S  # to send a whole request; idle connections close after it
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open at once; one more is answered 503

    def __post_init__(self) -> None:
        check_number(self.max_request_mb, field="--max-request-mb", minimum=0.001, maximum=2048.0)
        check_number(self.time_limit_s, field="--time-limit-s", minimum=1.0, maximum=86_400.0)
        check_int(self.memory_limit_mb, field="--memory-limit-mb", minimum=512, maximum=1 << 20)
        check_number(self.read_deadline_s, field="--read-deadline-s", minimum=1.0, maximum=3600.0)
        check_int(self.max_connections, field="--max-connections", minimum=1, maximum=1024)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * MIB)


def check_token(token: str, *, source: str) -> str:
    """``token`` if it can travel in an HTTP header: 1 to 4096 visible ASCII characters.

    The message names the source and the problem, never the token: it would
    end up in terminals and logs.

    Raises:
        AgentError: the token is empty, too long, or holds a space, a control
            character or non-ASCII text.
    """
    if not token:
        raise AgentError(f"the token from {source} is empty; write a secret token there")
    if len(token) > MAX_TOKEN_CHARS:
        raise AgentError(f"the token from {source} is longer than {MAX_TOKEN_CHARS} characters")
    bad = next((i for i, c in enumerate(token) if c not in _TOKEN_CHARS), None)
    if bad is not None:
        raise AgentError(
            f"the token from {source} has a space, control or non-ASCII character (character {bad + 1}); "
            "use visible ASCII only, e.g. `head -c 32 /dev/urandom | base64`"
        )
    return token


def read_token(token_file: str | Path | None = None) -> str | None:
    """The agent token from ``token_file``, else ``$IOTNAS_AGENT_TOKEN``, else None; outer whitespace is dropped.

    Raises:
        AgentError: the file cannot be read, or its token is unusable (see :func:`check_token`).
    """
    if token_file is not None:
        try:
            data = Path(token_file).read_bytes()
        except OSError as exc:
            raise AgentError(f"cannot read the token file {token_file}: {exc.strerror}") from exc
        # latin-1 maps every byte to one character, so check_token reports non-ASCII bytes without a decode error
        return check_token(data.decode("latin-1").strip(), source=f"the token file {token_file}")
    token = os.environ.get(TOKEN_ENV, "").strip()
    return check_token(token, source=f"${TOKEN_ENV}") if token else None


#: What makes a device the same device for timing: a board whose address changed keeps these;
#: another board, CPU or ONNX Runtime version does not (its timings would not compare).
IDENTITY_FIELDS = ("hostname", "cpu", "machine", "cpu_count", "runtime", "onnxruntime")


def device_identity(env: dict[str, Any] | None = None) -> dict[str, Any]:
    """This device's stable identity: hostname, CPU model, architecture, cores, runtime and its version.

    Not the governor, OS or Python version: they may change without making timings another device's.
    """
    env = environment() if env is None else env
    return {name: ("onnxruntime" if name == "runtime" else env.get(name)) for name in IDENTITY_FIELDS}


def identity_key(identity: dict[str, Any]) -> str:
    """A short stable digest of an identity, for latency keys: the same board under any URL."""
    text = json.dumps({name: identity.get(name) for name in IDENTITY_FIELDS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Refused(Exception):
    """A request the agent answers with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AgentServer:
    """The agent's HTTP server; bind with ``port=0`` for an ephemeral port."""

    def __init__(self, *, host: str, port: int, token: str, limits: AgentLimits = AgentLimits()) -> None:
        self.token = check_token(token, source="AgentServer's token argument")
        self.limits = limits
        self._timing_lock = threading.Lock()
        check_int(port, field="--port", minimum=0, maximum=65535)
        handler = type("_BoundHandler", (_Handler,), {"agent": self})
        try:
            self._httpd = _HTTPServer((host, port), handler, max_connections=limits.max_connections)
        except (OSError, ValueError, TypeError) as exc:  # the last two: a host name a socket cannot take
            raise AgentError(f"cannot listen on {host!r}:{port}: {getattr(exc, 'strerror', None) or exc}") from exc
        if not _is_loopback(self.address[0]):
            log.warning(
                "listening on %s, which other machines may reach, over plain HTTP: the token and the models "
                "travel unencrypted; use a trusted network or an SSH tunnel",
                self.address[0],
            )

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
        env = environment()
        return {"status": "ok", "iotnas": __version__, "runtimes": ["onnxruntime"], "environment": env,
                "identity": device_identity(env)}

    def measure(self, request: Any) -> dict[str, Any]:
        """Check a /measure request, then time its jobs in fresh processes, one request at a time."""
        try:
            check_keys(request, ("jobs", "protocol", "isolate"), what="request")
            jobs = request.get("jobs")
            if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_JOBS:
                got = f"{len(jobs)} jobs" if isinstance(jobs, list) else brief(jobs)
                raise LatencyError(f"request needs 'jobs', a list of 1 to {MAX_JOBS} jobs; got {got}")
            protocol = Protocol.from_dict(request.get("protocol", {}))
            isolate = check_bool(request.get("isolate", True), field="isolate")
        except LatencyError as exc:
            raise _Refused(400, str(exc)) from exc
        for i, job in enumerate(jobs):
            try:
                parse_onnx_job(job)
            except LatencyError as exc:
                raise _Refused(400, f"jobs[{i}]: {exc}") from exc
        groups = [[job] for job in jobs] if isolate else [jobs]
        results: list[dict[str, Any]] = []
        with self._timing_lock:
            for group in groups:
                try:
                    done = run_jobs(
                        group,
                        protocol=protocol,
                        timeout_s=self.limits.time_limit_s,
                        memory_limit_mb=self.limits.memory_limit_mb,
                    )
                except MemoryLimitError as exc:
                    raise _Refused(507, str(exc)) from exc
                except LatencyError as exc:
                    raise _Refused(500, str(exc)) from exc
                for r in done:
                    if isinstance(r, MemoryLimitError):
                        raise _Refused(507, f"jobs[{len(results)}]: {r}")
                    results.append(
                        {"measurement": r.to_dict()} if isinstance(r, LatencyMeasurement) else {"error": str(r)}
                    )
        return {"results": results}


_BUSY_BODY = json.dumps({"error": "the agent is serving its limit of connections; try again shortly"}).encode()
_BUSY_REPLY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 5\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; one more is answered 503 and closed."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog; with socketserver's 5, a burst of clients waits seconds on SYN retries

    def __init__(self, address: tuple[str, int], handler: type, *, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.info("%s - - 503 (too many connections)", client_address[0])
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_BUSY_REPLY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away mid-request is routine: one line, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.info("%s connection ended: %s", client_address[0], error)
        else:
            log.exception("%s request failed", client_address[0])


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, refused past a deadline.

    A timeout per read lets a client send one byte just before each timeout
    and hold its connection (and a thread) forever; a deadline bounds the
    whole request.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received before the deadline")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


def _printable(text: str, limit: int = 200) -> str:
    """``text`` for a log line: shortened, control and non-ASCII characters escaped."""
    return text[:limit].encode("unicode_escape").decode("ascii")


class _Handler(BaseHTTPRequestHandler):
    agent: AgentServer
    protocol_version = "HTTP/1.1"
    server_version = "iotnas-agent"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._started = time.monotonic()
        self._reader.deadline = self._started + self.agent.limits.read_deadline_s
        super().handle_one_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request; never a header, since the token is one."""
        log.info(
            "%s %s %s %s %.0f ms",
            self.client_address[0],
            getattr(self, "command", None) or "-",
            _printable(getattr(self, "path", "-")),
            int(code) if isinstance(code, int) else code,
            (time.monotonic() - self._started) * 1e3,
        )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        log.info("%s %s", self.client_address[0], _printable(format % args, 300))

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.connection.settimeout(self.agent.limits.read_deadline_s)  # a client that never reads its reply is dropped
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
            self.close_connection = self.close_connection or exc.status in (400, 401, 408, 411, 413)
            self._reply(exc.status, {"error": str(exc)})
        except OSError:
            raise  # the client went away: nothing to answer
        except Exception:  # process edge: a bug, not the client's fault; log it, answer 500, keep serving
            log.exception("request failed")
            self.close_connection = True
            self._reply(500, {"error": "internal error in the agent; its log has the details"})

    def _not_found(self) -> None:
        self.close_connection = True
        self._reply(404, {"error": "no such endpoint; use GET /health or POST /measure"})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/health":
            self._not_found()
            return
        self._serve(self.agent.health)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/measure":
            self._not_found()
            return
        self._serve(lambda: self.agent.measure(self._read_json()))

    def _read_json(self) -> Any:
        length_text = self.headers.get("Content-Length", "")
        if not re.fullmatch(r"[0-9]+", length_text):
            raise _Refused(411, "a Content-Length header (a decimal number) is required")
        limit = self.agent.limits.max_request_bytes
        if len(length_text) > 18 or int(length_text) > limit:
            raise _Refused(413, f"request body exceeds the limit of {limit} bytes")
        try:
            body = self.rfile.read(int(length_text))
        except TimeoutError as exc:
            raise _Refused(408, f"request not received within {self.agent.limits.read_deadline_s:g} s") from exc
        if len(body) != int(length_text):
            raise _Refused(400, "request body shorter than its Content-Length")
        return _parse_json(body)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse_json(body: bytes) -> Any:
    """The request body as JSON; NaN and infinities are refused, as standard JSON does."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise _Refused(400, "request body is nested too deeply") from exc
    except ValueError as exc:  # also bad UTF-8 and integers too long to convert
        raise _Refused(400, f"request body is not valid JSON: {str(exc)[:200]}") from exc


def _check_url(url: Any) -> str:
    """``url`` without a trailing slash, if urllib can use it as an agent's address."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise AgentError(f"device URL must start with http:// or https://, got {brief(url)}")
    if re.search(r"[\x00-\x20\x7f]", url):
        raise AgentError("device URL must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise AgentError(f"malformed device URL {url!r}: {exc}") from exc
    if not parts.hostname:
        raise AgentError(f"device URL {url!r} names no host; use http://HOST:PORT")
    return url.rstrip("/")


class AgentClient:
    """Talks to an agent over HTTP (urllib); every failure becomes an :class:`AgentError`."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 600.0) -> None:
        self.url = _check_url(url)
        self.token = check_token(token, source="AgentClient's token argument") if token else None
        self.timeout_s = check_number(timeout_s, field="timeout_s", minimum=0.001, maximum=86_400.0)

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
                message = str(json.loads(exc.read()).get("error", exc.reason))[:500]
            except (ValueError, AttributeError, OSError, http.client.HTTPException):
                message = exc.reason
            if exc.code == 401:
                hint = "" if self.token else f" (no token given: use --token-file or set {TOKEN_ENV})"
                raise AgentError(f"agent at {self.url} refused the request: {message}{hint}") from exc
            raise AgentError(f"agent at {self.url} answered HTTP {exc.code}: {message}") from exc
        except TimeoutError as exc:
            raise AgentError(f"agent at {self.url} did not answer within {self.timeout_s:g} s") from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise AgentError(f"agent at {self.url} did not answer within {self.timeout_s:g} s") from exc
            if isinstance(reason, ConnectionResetError | BrokenPipeError):
                raise AgentError(
                    f"agent at {self.url} broke off the connection ({reason}); the request may exceed its size limit"
                ) from exc
            raise AgentError(
                f"cannot reach the agent at {self.url}: {reason}; is `iotnas agent serve` running there?"
            ) from exc
        except (ConnectionError, http.client.HTTPException, ValueError) as exc:  # ValueError: malformed JSON
            raise AgentError(f"agent at {self.url} broke off or answered malformed HTTP or JSON: {exc}") from exc

    def health(self) -> dict[str, Any]:
        """The agent's status and its device's environment."""
        return self._call("GET", "/health")

    def identity(self) -> dict[str, Any]:
        """The device's stable identity (see :func:`device_identity`), as the agent reports it.

        Raises:
            AgentError: the agent cannot be reached, or reports no identity (an older iotnas there).
        """
        identity = self.health().get("identity")
        if not isinstance(identity, dict) or any(name not in identity for name in IDENTITY_FIELDS):
            raise AgentError(f"agent at {self.url} reports no device identity; "
                             "install this iotnas version on the device and restart the agent")
        return {name: identity[name] for name in IDENTITY_FIELDS}

    def measure_onnx(
        self,
        graphs: list[tuple[bytes, str | None]],
        *,
        settings: OrtSettings = OrtSettings(),
        protocol: Protocol = Protocol(),
        isolate: bool = True,
    ) -> list[LatencyMeasurement | LatencyError]:
        """Time ONNX graphs (``(bytes, target name or None)``) on the device with ONNX Runtime.

        Sends at most :data:`MAX_JOBS` graphs per request.

        Args:
            isolate: one fresh timing process per graph (else one per request).

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
        results: list[LatencyMeasurement | LatencyError] = []
        for start in range(0, len(jobs), MAX_JOBS):
            request = {"protocol": protocol.to_dict(), "isolate": isolate, "jobs": jobs[start : start + MAX_JOBS]}
            reply = self._call("POST", "/measure", request)
            try:
                results += [
                    LatencyMeasurement.from_dict(r["measurement"]) if "measurement" in r else AgentError(r["error"])
                    for r in reply["results"]
                ]
            except (KeyError, TypeError) as exc:
                raise AgentError(f"agent at {self.url} answered an unexpected reply: {exc}") from exc
        return results


def main(argv: list[str] | None = None) -> int:
    """``python -m iotnas.latency.agent``: serve without the training stack (no typer, no torch)."""
    parser = argparse.ArgumentParser(prog="python -m iotnas.latency.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_MB)
    parser.add_argument("--time-limit-s", type=float, default=DEFAULT_TIME_LIMIT_S)
    parser.add_argument("--memory-limit-mb", type=int, default=None, help="default: half the RAM, within 1-4 GiB")
    parser.add_argument("--read-deadline-s", type=float, default=DEFAULT_READ_DEADLINE_S)
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        server = serve_from_options(**vars(args))  # the options are named as its parameters
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


def serve_from_options(
    *, host: str, port: int, token_file: str | Path, memory_limit_mb: int | None, **limits: Any
) -> AgentServer:
    """An :class:`AgentServer` bound as ``agent serve``'s options say (memory None: the default)."""
    if memory_limit_mb is not None:
        limits["memory_limit_mb"] = memory_limit_mb
    return AgentServer(host=host, port=port, token=read_token(token_file) or "", limits=AgentLimits(**limits))


if __name__ == "__main__":
    sys.exit(main())

"""Open-loop HTTP/1.1 load, a probe client and two attacks, each in its own process.

Used by ``benchmarks/serving.py`` for the overload figures (the front and the worker at 1x, 3x
and 10x their capacity). wrk is closed-loop: a slow server slows it down, so it never offers more
than the server takes. :func:`open_loop` instead schedules request *n* at ``start + n / rate``
and sends it then, however late earlier answers are:

- keep-alive connections from a pool (idle ones reused, newest first); when none is idle a new
  one is opened, up to ``max_connections`` open or opening. A request that finds the pool at its
  bound is not sent and is counted (``unsent``), and so is a request that could not connect;
- each connection carries one request at a time (no pipelining), so requests in flight are
  bounded by ``max_connections``;
- the scheduler records how far behind schedule it runs (its own lag: CPU), every send how late
  it left (that plus waiting for a connection), every answer its latency from the send; its CPU
  time is measured in the process (``getrusage``), so the figures say when the generator itself,
  not the server, was the limit;
- a connection closed without ever answering (the front's per-client connection cap closes
  surplus connections at once) counts as ``refused``; closed with a request in flight after
  earlier answers: ``dropped``; no answer within ``timeout``: ``timeouts``.

:func:`probe` is one well-behaved client on its own connection (a request every ``interval``
s, the next one only after the answer). :func:`attacks` runs ``slow_bodies`` clients that send
full headers with ``Content-Length: 100000`` and then one body byte a second, and one client
that streams a 128 MiB header line until it is answered or closed, each starting over when
its connection ends. :func:`run_phase` starts them in separate processes (``fork``) on a common
start time and collects their figures. Sources are bound to a given loopback address
(``127.0.0.2`` for load and attacks, ``127.0.0.3`` for the probe) so per-client limits of a
front see two clients.
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import resource
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux; 3.11 lacks the name
LATE_S = 0.010  # a send more than this behind its schedule counts as late


def request_bytes(host: str, port: int, bodies: list[bytes], path: str = "/predict") -> list[bytes]:
    """Complete HTTP/1.1 POST requests (keep-alive), one per JSON body."""
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source`` (port chosen at connect time)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    except OSError:
        pass
    sock.bind((source, 0))
    return sock


def _quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Connections reset by the server are counted where they happen; anything else is reported."""
    if not isinstance(context.get("exception"), OSError):
        loop.default_exception_handler(context)


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - the serving venv has it
        loop = asyncio.new_event_loop()
    loop.set_exception_handler(_quiet)
    return loop


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length (None: chunked or absent), chunked, connection: close."""
    lower = head.lower()
    status = int(lower[9:12])
    length = None
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17:stop if stop >= 0 else None])
    chunked = b"\r\ntransfer-encoding: chunked" in lower
    return status, length, chunked, b"\r\nconnection: close" in lower


# --- open-loop load ---------------------------------------------------------------------------------


@dataclass
class LoadSpec:
    host: str
    port: int
    source: str
    rate: float  # requests per second offered
    duration: float
    start_at: float  # time.monotonic() of the first send (shared by all processes of a phase)
    requests: list[bytes]
    max_connections: int = 1024
    timeout: float = 10.0  # an answer later than this counts as a timeout
    grace: float = 5.0  # after the window: how long answers to requests in flight are awaited


class _Connection(asyncio.Protocol):
    __slots__ = ("load", "transport", "buffer", "busy", "sent_at", "answers", "closed", "expect", "status",
                 "chunked", "close_after")

    def __init__(self, load: _OpenLoop) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.sent_at = 0.0
        self.answers = 0
        self.closed = False
        self.expect = -1
        self.status = 0
        self.chunked = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> None:
        self.busy = True
        self.sent_at = time.monotonic()
        self.load.busy.add(self)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            if self.expect < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                try:
                    self.status, length, self.chunked, self.close_after = _parse_head(bytes(buffer[:end]))
                except ValueError:
                    self.transport.abort()
                    return
                self.expect = end + 4 + (length or 0)
            if self.chunked:
                stop = buffer.find(b"0\r\n\r\n", self.expect)
                if stop < 0:
                    return
                self.expect, self.chunked = stop + 5, False
            if len(buffer) < self.expect:
                return
            del buffer[:self.expect]
            self.expect = -1
            if not self.busy:  # an answer nobody asked for (a server's 408 on an idle connection)
                self.transport.close()
                return
            self.busy = False
            self.answers += 1
            self.load.busy.discard(self)
            self.load.answered(self.status, time.monotonic() - self.sent_at)
            if self.close_after:
                self.transport.close()
                return
            self.load.idle.append(self)
            if not buffer:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.load.open -= 1
        if self.busy:
            self.busy = False
            self.load.busy.discard(self)
            self.load.failures["refused" if self.answers == 0 else "dropped"] += 1

    def eof_received(self) -> bool:
        return False


class _OpenLoop:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.loop = asyncio.get_event_loop()
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.open = 0  # connected or connecting
        self.max_open = 0
        self.opened = 0
        self.sent = 0
        self.scheduled = 0
        self.failures: Counter[str] = Counter()
        self.connect_errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.ok_latencies: list[float] = []
        self.ok_in_window = 0
        self.lateness: list[float] = []
        self.scheduler_lag: list[float] = []
        self.window_end = spec.start_at + spec.duration
        self.cycle = 0

    def answered(self, status: int, latency: float) -> None:
        self.statuses[status] += 1
        if status == 200:
            self.ok_latencies.append(latency)
            if time.monotonic() < self.window_end:
                self.ok_in_window += 1

    def _next_request(self) -> bytes:
        requests = self.spec.requests
        self.cycle = (self.cycle + 1) % len(requests)
        return requests[self.cycle]

    def dispatch(self, scheduled: float) -> None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                self.lateness.append(time.monotonic() - scheduled)
                self.sent += 1
                connection.send(self._next_request())
                return
        if self.open >= self.spec.max_connections:
            self.failures["unsent"] += 1
            return
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.loop.create_task(self._connect_and_send(scheduled))

    async def _connect_and_send(self, scheduled: float) -> None:
        try:  # about 45 us of CPU a connection here, 2.5 times less than sock_connect on a socket of our own
            _, connection = await self.loop.create_connection(lambda: _Connection(self), self.spec.host,
                                                              self.spec.port, local_addr=(self.spec.source, 0))
        except OSError as exc:
            self.open -= 1
            # reset during the handshake: the front closed it at once (its per-client connection cap)
            if isinstance(exc, ConnectionResetError):
                self.failures["refused"] += 1
                self.failures["refused_at_connect"] += 1
            else:
                self.failures["connect_error"] += 1
            self.connect_errors[errno.errorcode.get(exc.errno or 0, type(exc).__name__)] += 1
            return
        self.opened += 1
        self.lateness.append(time.monotonic() - scheduled)
        self.sent += 1
        connection.send(self._next_request())

    async def _sweep(self) -> None:
        """Abort connections whose answer is later than the timeout."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for connection in [c for c in self.busy if now - c.sent_at > self.spec.timeout]:
                connection.busy = False
                self.busy.discard(connection)
                self.failures["timeout"] += 1
                connection.transport.abort()

    async def run(self) -> dict:
        spec = self.spec
        sweeper = self.loop.create_task(self._sweep())
        await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
        cpu_start, wall_start = _cpu_seconds(), time.monotonic()
        interval = 1.0 / spec.rate
        total = int(spec.rate * spec.duration)
        while self.scheduled < total:
            now = time.monotonic()
            due = min(total, int((now - spec.start_at) * spec.rate) + 1)
            if due > self.scheduled:  # how far the scheduler itself is behind (its own CPU, not the server)
                self.scheduler_lag.append(now - (spec.start_at + self.scheduled * interval))
            while self.scheduled < due:
                self.dispatch(spec.start_at + self.scheduled * interval)
                self.scheduled += 1
            await asyncio.sleep(0.001)
        await asyncio.sleep(max(0.0, self.window_end - time.monotonic()))
        cpu_window, wall_window = _cpu_seconds() - cpu_start, time.monotonic() - wall_start
        deadline = time.monotonic() + spec.grace
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        unanswered = len(self.busy)
        sweeper.cancel()
        for connection in list(self.busy) + self.idle:
            if connection.transport is not None:
                connection.transport.abort()
        late = sum(1 for value in self.lateness if value > LATE_S)
        return {
            "target_rps": round(spec.rate, 1),
            "duration_s": spec.duration,
            "scheduled": self.scheduled,
            "sent": self.sent,
            # offered: sent on a connection, or refused by the server when connecting, on schedule or late
            "offered_rps": round((self.sent + self.failures.get("refused_at_connect", 0)) / spec.duration, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "ok": self.statuses.get(200, 0),
            "ok_in_window": self.ok_in_window,
            "failures": dict(self.failures),
            "connect_errors": dict(self.connect_errors),
            "unanswered_at_end": unanswered,
            "connections_opened": self.opened,
            "max_connections_open": self.max_open,
            "ok_p50_ms": _ms(percentile(self.ok_latencies, 50)),
            "ok_p99_ms": _ms(percentile(self.ok_latencies, 99)),
            "scheduler_lag_p99_ms": _ms(percentile(self.scheduler_lag, 99)),
            "send_lag_p99_ms": _ms(percentile(self.lateness, 99)),
            "send_lag_max_ms": _ms(max(self.lateness, default=0.0)),
            "late_share": round(late / max(len(self.lateness), 1), 4),
            "cpu_s": round(cpu_window, 2),
            "cpu_cores": round(cpu_window / wall_window, 2),
        }


def open_loop(spec: LoadSpec) -> dict:
    """Offer ``spec.rate`` requests per second for ``spec.duration`` s; the figures."""
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_OpenLoop(spec).run())
    finally:
        loop.close()


# --- the probe ---------------------------------------------------------------------------------------


@dataclass
class ProbeSpec:
    host: str
    port: int
    source: str
    duration: float
    start_at: float
    requests: list[bytes]
    interval: float = 0.05
    timeout: float = 5.0


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, chunked, close = _parse_head(head[:-4])
    if chunked:
        await reader.readuntil(b"0\r\n\r\n")
    elif length:
        await reader.readexactly(length)
    return status, close


async def _open(host: str, port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = _socket(source)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def _probe(spec: ProbeSpec) -> dict:
    streams = await _open(spec.host, spec.port, spec.source)  # connected before the load starts
    answers: list[tuple[int, float]] = []
    errors: Counter[str] = Counter()
    tick = 0
    end = spec.start_at + spec.duration
    while True:
        scheduled = spec.start_at + tick * spec.interval
        if scheduled >= end:
            break
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        started = time.monotonic()
        try:
            if streams is None:
                streams = await asyncio.wait_for(_open(spec.host, spec.port, spec.source), spec.timeout)
            reader, writer = streams
            writer.write(spec.requests[tick % len(spec.requests)])
            status, close = await asyncio.wait_for(_read_answer(reader), spec.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            status, close = 0, True
        answers.append((status, time.monotonic() - started))
        if close and streams is not None:
            streams[1].transport.abort()
            streams = None
        tick = max(tick + 1, int((time.monotonic() - spec.start_at) / spec.interval) + 1)
    if streams is not None:
        streams[1].transport.abort()
    ok = [seconds for status, seconds in answers if status == 200]
    return {
        "requests": len(answers),
        "ok": len(ok),
        "success_share": round(len(ok) / max(len(answers), 1), 4),
        "statuses": {str(k): v for k, v in sorted(Counter(s for s, _ in answers).items())},
        "errors": dict(errors),
        "ok_p50_ms": _ms(percentile(ok, 50)),
        "ok_p99_ms": _ms(percentile(ok, 99)),
        "all_p99_ms": _ms(percentile([seconds for _, seconds in answers], 99)),
        "max_ms": _ms(max((seconds for _, seconds in answers), default=None)),
    }


def probe(spec: ProbeSpec) -> dict:
    """One request every ``spec.interval`` s on one connection; its success share and latency."""
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_probe(spec))
    finally:
        loop.close()


# --- the attacks -------------------------------------------------------------------------------------


@dataclass
class AttackSpec:
    host: str
    port: int
    source: str
    duration: float
    start_at: float
    slow_bodies: int = 64
    slow_body_length: int = 100_000
    header_bytes: int = 128 << 20
    chunk: int = 64 << 10
    restart_pause: float = 1.0  # the big-header client waits this long before starting over


@dataclass
class _Outcomes:
    results: Counter[str] = field(default_factory=Counter)
    held_s: list[float] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)


def _connect_failure(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "refused"
    return "connect_timeout" if isinstance(exc, TimeoutError) else "connect_error"


def _status_of(data: bytes) -> str:
    if data.startswith(b"HTTP/1."):
        return data[9:12].decode(errors="replace")
    return "closed" if not data else "garbage"


async def _slow_body(spec: AttackSpec, outcomes: _Outcomes, end: float) -> None:
    head = (f"POST /predict HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {spec.slow_body_length}\r\n\r\n").encode()
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.wait_for(_open(spec.host, spec.port, spec.source), 5)
        except (OSError, TimeoutError) as exc:
            outcomes.results[_connect_failure(exc)] += 1
            await asyncio.sleep(0.2)
            continue
        started = time.monotonic()
        answer = asyncio.ensure_future(reader.read(4096))
        sent, outcome = 0, None
        try:
            writer.write(head)
            while time.monotonic() < end:
                done, _ = await asyncio.wait({answer}, timeout=min(1.0, max(0.01, end - time.monotonic())))
                if done:
                    break
                writer.write(b"1")
                sent += 1
        except (OSError, RuntimeError):  # uvloop: RuntimeError on writing to a transport the peer closed
            outcome = "reset"
        if outcome is None and answer.done():
            try:
                outcome = _status_of(answer.result())
            except OSError:
                outcome = "reset"
        elif outcome is None:
            outcome = "held_to_end"
        if not answer.done():
            answer.cancel()
        writer.transport.abort()
        held = time.monotonic() - started
        if outcome in ("closed", "reset") and held < 0.1:
            outcome = "refused"  # closed at once: the front's per-client connection cap
        outcomes.results[outcome] += 1
        outcomes.held_s.append(held)
        outcomes.bytes_sent.append(sent)
        if outcome in ("closed", "reset", "refused"):
            await asyncio.sleep(0.2)  # try again shortly, not in a hot loop


async def _big_header(spec: AttackSpec, outcomes: _Outcomes, end: float) -> None:
    head = f"POST /predict HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\nX-Filler: ".encode()
    filler = b"a" * spec.chunk
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.wait_for(_open(spec.host, spec.port, spec.source), 5)
        except (OSError, TimeoutError) as exc:
            outcomes.results[_connect_failure(exc)] += 1
            await asyncio.sleep(spec.restart_pause)
            continue
        started, sent = time.monotonic(), 0
        answer = asyncio.ensure_future(reader.read(4096))
        outcome = "held_to_end"
        try:
            writer.write(head)
            while sent < spec.header_bytes and not answer.done() and time.monotonic() < end:
                writer.write(filler)
                try:
                    await asyncio.wait_for(writer.drain(), max(0.01, end - time.monotonic()))
                except TimeoutError:
                    break
                sent += len(filler)
            if sent >= spec.header_bytes and not answer.done():
                writer.write(b"\r\nContent-Length: 2\r\n\r\n{}")
            if not answer.done():
                await asyncio.wait({answer}, timeout=max(0.01, end - time.monotonic()))
            if answer.done():
                try:
                    outcome = _status_of(answer.result())
                except OSError:
                    outcome = "reset"
            else:
                answer.cancel()
        except (OSError, RuntimeError):  # uvloop: RuntimeError on writing to a transport the peer closed
            outcome = "reset"
            answer.cancel()
        finally:
            writer.transport.abort()
        outcomes.results[outcome] += 1
        outcomes.held_s.append(time.monotonic() - started)
        outcomes.bytes_sent.append(sent)
        await asyncio.sleep(spec.restart_pause)


async def _until_end(attack, spec: AttackSpec, outcomes: _Outcomes, end: float) -> None:  # noqa: ANN001
    """Run one attack client, starting it over after an unexpected error (counted by its type)."""
    while time.monotonic() < end:
        try:
            await attack(spec, outcomes, end)
        except Exception as exc:  # noqa: BLE001 - counted, then the client starts over
            outcomes.results[f"error:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)


async def _attacks(spec: AttackSpec) -> dict:
    await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    cpu_start, end = _cpu_seconds(), spec.start_at + spec.duration
    slow, big = _Outcomes(), _Outcomes()
    tasks = ([_until_end(_slow_body, spec, slow, end) for _ in range(spec.slow_bodies)]
             + [_until_end(_big_header, spec, big, end)])
    await asyncio.gather(*tasks)
    return {
        "slow_body": {"clients": spec.slow_bodies, "outcomes": dict(slow.results),
                      "held_p50_s": round(percentile(slow.held_s, 50) or 0, 2),
                      "held_max_s": round(max(slow.held_s, default=0), 2),
                      "body_bytes_sent_max": max(slow.bytes_sent, default=0)},
        "big_header": {"attempts": len(big.held_s), "outcomes": dict(big.results),
                       "bytes_sent_max": max(big.bytes_sent, default=0),
                       "bytes_sent_total": sum(big.bytes_sent),
                       "held_max_s": round(max(big.held_s, default=0), 2)},
        "cpu_cores": round((_cpu_seconds() - cpu_start) / spec.duration, 2),
    }


def attacks(spec: AttackSpec) -> dict:
    """The slow-body clients and the big-header client until the end of the window; their outcomes."""
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_attacks(spec))
    finally:
        loop.close()


# --- a phase: the processes together ----------------------------------------------------------------


def _child(function, spec, pipe) -> None:  # noqa: ANN001 (any of the three)
    try:
        pipe.send(function(spec))
    except BaseException as exc:  # the parent reports it
        pipe.send({"error": repr(exc)})
    finally:
        pipe.close()


def run_phase(parts: dict[str, tuple], timeout: float) -> dict[str, dict]:
    """Run ``{name: (function, spec)}`` each in a forked process; ``{name: figures}``."""
    context = multiprocessing.get_context("fork")
    running = {}
    for name, (function, spec) in parts.items():
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(function, spec, sender), daemon=True)
        process.start()
        sender.close()
        running[name] = (process, receiver)
    results: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    for name, (process, receiver) in running.items():
        if receiver.poll(max(0.1, deadline - time.monotonic())):
            results[name] = receiver.recv()
        else:
            results[name] = {"error": "no result in time"}
            process.kill()
        process.join(5)
    return results

"""The simulated network: TCP connections between simulated machines, under
asyncio's transport/protocol interface (so asyncio streams, the Kafka
server and the cluster RPC run on it unchanged).

The model is TCP's, not a datagram network's: within one connection bytes
arrive in order and are never lost (a dropped packet is retransmitted, so
it shows up as delay); between connections anything may reorder. Faults:

- latency per machine pair, with jitter and spikes (`slow`: extra delay
  for every link of a machine);
- partitions between any two machines (brokers, clients): nothing crosses
  while cut; what was sent waits and arrives, in order, after the heal (TCP
  retransmits); a connect waits (SYN retries) and times out after ~2 min;
- resets: a connection is aborted, both ends see ConnectionResetError;
- a crashed process's connections are closed by its "kernel": the peer
  reads what was already sent, then end of file; its listeners are gone, so
  connecting there is refused. A paused process's kernel still accepts
  connections and buffers data; its callbacks run when it resumes.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import random

_FIN = "fin"
_RST = "rst"


class SimSocket:
    """What `server.sockets[0]` must answer."""

    def __init__(self, address):
        self._address = address

    def getsockname(self):
        return self._address


class SimServer:
    def __init__(self, net: "SimNetwork", proc, factory, address):
        self.net, self.proc, self.factory, self.address = net, proc, factory, address
        self.sockets = [SimSocket(address)]
        self.serving = True

    def close(self) -> None:
        if self.serving:
            self.serving = False
            if self.net.listeners.get(self.address) is self:
                del self.net.listeners[self.address]

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return self.serving

    def get_loop(self):
        return self.net.loop


class SimTransport(asyncio.Transport):
    def __init__(self, net: "SimNetwork", proc, local, remote):
        super().__init__()
        self.net = net
        self.proc = proc            # the process that owns this end
        self.local, self.remote = local, remote
        self.peer: SimTransport | None = None
        self.protocol = None
        self.closing = False        # we closed (or aborted) our end
        self.lost = False           # connection_lost was delivered here
        self.held: collections.deque = collections.deque()   # waiting for a partition to heal
        self.last_arrival = 0.0
        self.reading = True
        self.number = -1

    # -- asyncio.Transport -----------------------------------------------------
    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self.remote
        if name == "sockname":
            return self.local
        return default

    def is_closing(self) -> bool:
        return self.closing or self.lost

    def write(self, data) -> None:
        if self.closing or self.lost or not data:
            return
        self.net.send(self, bytes(data))

    def writelines(self, chunks) -> None:
        self.write(b"".join(chunks))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if self.closing or self.lost:
            return
        self.closing = True
        self.net.send(self, _FIN)
        self.proc.call_soon(self._lose, None)

    def abort(self) -> None:
        if self.lost:
            return
        self.closing = True
        self.held.clear()
        self.net.send(self, _RST)
        self.proc.call_soon(self._lose, None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    # -- arrivals (run in the owning process) ----------------------------------
    def _lose(self, exc) -> None:
        if self.lost:
            return
        self.lost = True
        self.closing = True
        self.net.open.pop(self.number, None)
        if self.protocol is not None:
            self.protocol.connection_lost(exc)

    def _arrive(self, item) -> None:
        if self.lost:
            if isinstance(item, bytes) and self.peer is not None:
                self.net.send_rst_back(self)   # data to a closed socket: RST
            return
        if item is _RST:
            self._lose(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
        elif item is _FIN:
            keep_open = self.protocol.eof_received() if self.protocol is not None else False
            if not keep_open:
                self.close()
        elif self.protocol is not None:
            self.protocol.data_received(item)


class SimNetwork:
    def __init__(self, loop, rng: random.Random):
        self.loop = loop
        self.rng = rng
        self.listeners: dict[tuple, SimServer] = {}
        self.cut: dict[frozenset, bool] = {}      # a dict, not a set: iteration order must not follow hashes
        self.slow: dict[str, float] = {}          # machine -> extra one-way delay (s)
        self.base: dict[frozenset, float] = {}    # machine pair -> base one-way delay
        self.open: dict[int, SimTransport] = {}   # by creation number: iterated in a fixed order
        self._watched: set[int] = set()
        self.blocked: dict[frozenset, list] = {}
        self._ports = itertools.count(40000)
        self._numbers = itertools.count()
        self.connects = 0
        self.bytes = 0

    # -- links -------------------------------------------------------------------
    def link(self, a: str, b: str) -> frozenset:
        return frozenset((a, b))

    def is_cut(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) in self.cut

    def latency(self, a: str, b: str) -> float:
        if a == b:
            return 20e-6
        key = frozenset((a, b))
        base = self.base.get(key)
        if base is None:
            base = self.base[key] = self.rng.uniform(50e-6, 1e-3)
        d = base + self.rng.expovariate(1 / (base / 2))
        if self.rng.random() < 0.01:      # a retransmission, a GC pause on a switch
            d += self.rng.uniform(0.005, 0.2)
        return d + self.slow.get(a, 0.0) + self.slow.get(b, 0.0)

    def partition(self, a: str, b: str) -> None:
        self.cut[frozenset((a, b))] = True

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Heal one link (a and b), or every link."""
        links = [frozenset((a, b))] if a is not None else list(self.cut)
        for key in links:
            self.cut.pop(key, None)
            for tr in self.blocked.pop(key, []):
                self._flush(tr)

    # -- connections ---------------------------------------------------------------
    def listen(self, proc, factory, host, port) -> SimServer:
        host = host or proc.node
        if port in (None, 0):
            port = next(self._ports)
        address = (host, int(port))
        if address in self.listeners:
            raise OSError(errno.EADDRINUSE, f"address {host}:{port} already in use")
        server = self.listeners[address] = SimServer(self, proc, factory, address)
        self._watch(proc)
        return server

    def _watch(self, proc) -> None:
        if proc.pid in self._watched:
            return
        self._watched.add(proc.pid)

        def crashed():
            for server in [s for s in self.listeners.values() if s.proc is proc]:
                server.close()
            for tr in [t for t in self.open.values() if t.proc is proc]:
                self.kernel_close(tr)
        proc.on_crash.append(crashed)

    async def connect(self, proc, factory, host, port):
        src, dst = proc.node, host
        waited, backoff = 0.0, 1.0
        while self.is_cut(src, dst):          # SYNs are lost; the kernel retries
            if waited >= 127:
                raise TimeoutError(errno.ETIMEDOUT, f"connect to {host}:{port} timed out")
            await asyncio.sleep(backoff)
            waited += backoff
            backoff *= 2
        await asyncio.sleep(self.latency(src, dst))
        server = self.listeners.get((host, port))
        if server is None or not server.serving:
            await asyncio.sleep(self.latency(dst, src))
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connect to {host}:{port}: connection refused")
        await asyncio.sleep(self.latency(dst, src))
        if not server.serving:
            raise ConnectionResetError(errno.ECONNRESET, f"connect to {host}:{port}: reset")
        self.connects += 1
        local = (src, next(self._ports))
        mine = SimTransport(self, proc, local, (host, port))
        theirs = SimTransport(self, server.proc, (host, port), local)
        mine.peer, theirs.peer = theirs, mine
        mine.number, theirs.number = next(self._numbers), next(self._numbers)
        self.open[mine.number] = mine
        self.open[theirs.number] = theirs
        self._watch(proc)
        self._watch(server.proc)

        def accept():
            if theirs.lost:
                return
            protocol = server.factory()
            theirs.protocol = protocol
            protocol.connection_made(theirs)
        server.proc.call_soon(accept)
        protocol = factory()
        mine.protocol = protocol
        protocol.connection_made(mine)
        return mine, protocol

    def kernel_close(self, tr: SimTransport) -> None:
        """The owning process died: its kernel sends what was written, then FIN."""
        if tr.lost:
            return
        if not tr.closing:
            tr.closing = True
            self.send(tr, _FIN)
        tr.lost = True
        self.open.pop(tr.number, None)

    def reset(self, tr: SimTransport) -> None:
        """A reset fault: both ends see ECONNRESET at once; nothing in flight arrives."""
        for end in (tr, tr.peer):
            if end is None or end.lost:
                continue
            end.held.clear()
            end.closing = True
            end.proc.call_soon(end._lose, ConnectionResetError(errno.ECONNRESET, "Connection reset (fault)"))

    def connections_of(self, node: str) -> list[SimTransport]:
        return [t for t in self.open.values() if t.proc.node == node and not t.lost]

    # -- bytes -------------------------------------------------------------------------
    def send(self, tr: SimTransport, item) -> None:
        peer = tr.peer
        if peer is None:
            return
        if isinstance(item, bytes):
            self.bytes += len(item)
        if tr.held or self.is_cut(tr.proc.node, peer.proc.node):
            if not tr.held:
                self.blocked.setdefault(frozenset((tr.proc.node, peer.proc.node)), []).append(tr)
            tr.held.append(item)
            return
        self._deliver(tr, item)

    def _deliver(self, tr: SimTransport, item) -> None:
        peer = tr.peer
        at = max(self.loop.time() + self.latency(tr.proc.node, peer.proc.node), tr.last_arrival)
        tr.last_arrival = at
        peer.proc.call_at(at, peer._arrive, item)

    def _flush(self, tr: SimTransport) -> None:
        while tr.held:
            self._deliver(tr, tr.held.popleft())

    def send_rst_back(self, closed_end: SimTransport) -> None:
        sender = closed_end.peer
        if sender is None or sender.lost:
            return
        at = self.loop.time() + self.latency(closed_end.proc.node, sender.proc.node)
        sender.proc.call_at(at, sender._arrive, _RST)

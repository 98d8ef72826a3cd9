"""A delaying TCP proxy in front of an S3 endpoint.

This is the first piece of the S3 fault proxy (design.md: latency, 503
SlowDown, 500, resets, hangs, ambiguous success). It works below HTTP: every
chunk a client sends waits `latency` seconds before it is forwarded, so each
S3 request pays that much extra round-trip time once, whatever the S3 server:
the first chunk a client sends after the server last answered (a new request)
waits `latency` seconds before it is forwarded; the rest of the request follows
it at once. The HTTP-aware faults come with the
nemesis issue.
"""
from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class DelayProxy:
    def __init__(self, upstream_host: str, upstream_port: int, latency: float = 0.0,
                 listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.latency = latency
        self.listen = (listen_host, listen_port)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server = None
        self.requests_delayed = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.listen[0]}:{self.port}"

    async def _pipe(self, reader, writer, exchange: dict, from_client: bool):
        try:
            while data := await reader.read(65536):
                if from_client:
                    if exchange["new_request"] and self.latency > 0:
                        self.requests_delayed += 1
                        await asyncio.sleep(self.latency)
                    exchange["new_request"] = False
                elif not data.startswith(b"HTTP/1.1 100"):
                    # "100 Continue" (boto3 sends Expect on PUT) is not an answer:
                    # the request body that follows belongs to the same exchange.
                    exchange["new_request"] = True
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as e:
            log.warning("upstream %s:%d unreachable: %s", *self.upstream, e)
            client_writer.close()
            return
        exchange = {"new_request": True}
        try:
            await asyncio.gather(self._pipe(client_reader, up_writer, exchange, True),
                                 self._pipe(up_reader, client_writer, exchange, False))
        except asyncio.CancelledError:
            client_writer.close()
            up_writer.close()

    def start(self) -> "DelayProxy":
        def run():
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, *self.listen))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            self._loop.run_forever()
        self._thread = threading.Thread(target=run, name="s3-delay-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    async def _shutdown(self):
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(5)
            self._loop.close()
            self._loop = None


def main(argv=None) -> int:
    import argparse
    import time
    from harness.durations import parse_duration
    p = argparse.ArgumentParser(description="delaying TCP proxy in front of an S3 endpoint")
    p.add_argument("upstream", help="HOST:PORT of the S3 server")
    p.add_argument("--latency", default="100ms")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    host, port = a.upstream.rsplit(":", 1)
    proxy = DelayProxy(host, int(port), parse_duration(a.latency), listen_port=a.port).start()
    print(proxy.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

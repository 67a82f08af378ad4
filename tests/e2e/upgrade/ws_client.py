"""A WebSocket client for the end-to-end tests (Python `websockets`). Prints one JSON
object on stdout with what it saw.

    ws_client.py URL exchange        text, binary, ping/pong, a 1 MiB message, the
                                     handshake's headers as the server saw them, close
    ws_client.py URL handshake       only the handshake: its status, or the refusal's
                                     status, headers and body
    ws_client.py URL idle SECONDS    one message, then silence: when the connection
                                     closed (by the other side), within SECONDS
    ws_client.py URL busy SECONDS    a message every 100 ms for SECONDS: whether the
                                     connection stayed open throughout
    ws_client.py URL rtt N           N round trips of a 32-byte message: median and p99
"""

import asyncio
import json
import os
import statistics
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

MIB = 1024 * 1024


def opened(url):
    return connect(url, max_size=16 * MIB, ping_interval=None, open_timeout=10,
                   close_timeout=5, additional_headers={"x-from-client": "1"})


async def exchange(url):
    out = {}
    async with opened(url) as ws:
        out["response_headers"] = {k.lower(): v for k, v in ws.response.headers.raw_items()}
        await ws.send("hello")
        out["text"] = await ws.recv()
        payload = bytes(range(256)) * 4
        await ws.send(payload)
        out["binary_ok"] = await ws.recv() == payload
        pong = await ws.ping(b"are-you-there")
        await asyncio.wait_for(pong, 10)
        out["pong"] = True
        big = os.urandom(MIB)
        await ws.send(big)
        out["mib_ok"] = await ws.recv() == big
        await ws.send("headers")
        out["upstream_saw"] = json.loads(await ws.recv())
        await ws.close(code=4001, reason="done here")
        out["close_code"] = ws.close_code
        out["close_reason"] = ws.close_reason
    return out


async def handshake(url):
    try:
        async with opened(url) as ws:
            return {"switched": True, "status": ws.response.status_code}
    except InvalidStatus as e:
        r = e.response
        return {"switched": False, "status": r.status_code,
                "headers": {k.lower(): v for k, v in r.headers.raw_items()},
                "body": r.body.decode("utf-8", "replace")}


async def idle(url, seconds):
    async with opened(url) as ws:
        await ws.send("once")
        await ws.recv()
        started = time.monotonic()
        try:
            await asyncio.wait_for(ws.recv(), seconds)
            return {"closed": False, "error": "got a message"}
        except ConnectionClosed:
            return {"closed": True, "after_s": time.monotonic() - started}
        except asyncio.TimeoutError:
            return {"closed": False, "after_s": time.monotonic() - started}


async def busy(url, seconds):
    async with opened(url) as ws:
        sent = 0
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                await ws.send(f"tick {sent}")
                if await ws.recv() != f"tick {sent}":
                    return {"open": False, "error": "wrong echo"}
                sent += 1
                await asyncio.sleep(0.1)
        except ConnectionClosed as e:
            return {"open": False, "sent": sent, "error": str(e)}
        return {"open": True, "sent": sent}


async def rtt(url, n):
    async with opened(url) as ws:
        message = "x" * 32
        for _ in range(100):  # warm-up
            await ws.send(message)
            await ws.recv()
        samples = []
        for _ in range(n):
            t = time.perf_counter_ns()
            await ws.send(message)
            await ws.recv()
            samples.append((time.perf_counter_ns() - t) / 1000)
        samples.sort()
        return {"n": n, "median_us": statistics.median(samples),
                "p99_us": samples[int(n * 0.99) - 1]}


async def main(url, scenario, arg):
    if scenario == "exchange":
        return await exchange(url)
    if scenario == "handshake":
        return await handshake(url)
    if scenario == "idle":
        return await idle(url, float(arg))
    if scenario == "busy":
        return await busy(url, float(arg))
    if scenario == "rtt":
        return await rtt(url, int(arg))
    raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    print(json.dumps(result))

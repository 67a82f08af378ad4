"""A WebSocket peer for the end-to-end tests (Python `websockets`).

    ws_server.py echo      echoes every message; the text message "headers" gets the
                           handshake's request headers back, as JSON
    ws_server.py refuse    answers every handshake with 200 and a body: an upstream
                           that does not switch

Binds 127.0.0.1:0, prints `PORT <n>` on stdout, and serves until killed.
"""

import asyncio
import http
import json
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for message in ws:
            if message == "headers":
                headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
                await ws.send(json.dumps(headers))
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass  # a close with a code of the client's choosing, or none (an idle cut)


def refuse(connection, request):
    return connection.respond(http.HTTPStatus.OK, "no websocket here\n")


async def main(mode):
    process_request = refuse if mode == "refuse" else None
    # 16 MiB: the tests send 1 MiB messages; no pings of its own, so that only the
    # client decides when the connection is idle.
    async with serve(echo, "127.0.0.1", 0, max_size=16 * 1024 * 1024,
                     ping_interval=None, process_request=process_request) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "echo"))

"""A gRPC server for the end-to-end tests (Python `grpcio`), plain text (h2c). Messages
are raw bytes (no protobuf): the service is `portcullis.test.Echo` with

    Unary         answers the request, upper-cased, with trailing metadata
                  `x-trailer: from-server` and the caller's `x-from-client` echoed in
                  `x-seen-from-client`
    ServerStream  request b"N": N messages b"0".."N-1"
    Bidi          answers every message, reversed, as it arrives
    Fail          ends with NOT_FOUND, "no such thing"
    Slow          request b"S": answers b"late" after S seconds
    SlowStream    request b"N": N messages b"0".."N-1", 0.2 s apart

and `grpc.health.v1.Health/Check`, answering SERVING, or NOT_SERVING when started
with the argument `not-serving` (raw protobuf: field 1, the status); such a server
fails every Unary call with UNAVAILABLE.

Binds 127.0.0.1:0, prints `PORT <n>` on stdout, and serves until killed.
"""

import sys
import time
from concurrent import futures

import grpc


NOT_SERVING = "not-serving" in sys.argv[1:]


def unary(request, context):
    if NOT_SERVING:
        context.abort(grpc.StatusCode.UNAVAILABLE, "not serving")
    seen = dict(context.invocation_metadata()).get("x-from-client", "")
    context.set_trailing_metadata((("x-trailer", "from-server"), ("x-seen-from-client", seen)))
    return request.upper()


def server_stream(request, context):
    for i in range(int(request)):
        yield str(i).encode()


def bidi(requests, context):
    for message in requests:
        yield message[::-1]


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def slow(request, context):
    time.sleep(float(request))
    return b"late"


def slow_stream(request, context):
    for i in range(int(request)):
        if i:
            time.sleep(0.2)
        yield str(i).encode()


def main():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "SlowStream": grpc.unary_stream_rpc_method_handler(slow_stream),
    }
    status = b"\x08\x02" if NOT_SERVING else b"\x08\x01"
    health = {"Check": grpc.unary_unary_rpc_method_handler(lambda request, context: status)}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("portcullis.test.Echo", handlers),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
    ))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())

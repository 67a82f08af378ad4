"""Local stand-ins for the upstreams third-party filters' own demos call, for
benches/compat/thirdparty. Loopback only; each binds 127.0.0.1:0 and prints
`PORT <n>` on stdout, then serves until killed.

    servers.py http   httpbin's `/bytes/N` (N random bytes) and `/uuid`; a PUT or POST
                      answers its body; any other GET answers its path in a text,
                      `/secret` a body containing "secret", `/fetch` the token
                      `foo`, and a path starting `/deny` a 403
    servers.py grpc   grpcbin's `grpcbin.GRPCBin/RandomError` (a random status, OK or
                      not) and `hello.HelloService/SayHello` (echoes the raw request
                      bytes), plain text h2c; needs Python `grpcio`
    servers.py grpc-client PORT PATH   one unary call with an empty message; prints
                      `<status code name> <details>`
"""

import os
import random
import sys
import uuid
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return out
                out += chunk
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_PUT(self):
        self.answer(self.body(), "text/plain")

    do_POST = do_PUT

    def answer(self, body, kind):
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/deny"):
            self.send_response(403)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if self.path == "/fetch":
            return self.answer(b"foo", "text/plain")
        if self.path == "/uuid":
            body = ('{"uuid": "%s"}\n' % uuid.uuid4()).encode()
            kind = "application/json"
        elif self.path.startswith("/bytes/"):
            body = os.urandom(int(self.path.split("/")[2]))
            kind = "application/octet-stream"
        elif self.path == "/secret":
            body = b"This is a secret message: nobody may read it.\n"
            kind = "text/plain"
        else:
            body = ("hello from " + self.path + "\n").encode()
            kind = "text/plain"
        self.answer(body, kind)

    def log_message(self, *args):
        pass


def grpc_server():
    import grpc

    def random_error(request, context):
        code = random.choice([grpc.StatusCode.OK, grpc.StatusCode.CANCELLED,
                              grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT])
        if code != grpc.StatusCode.OK:
            context.abort(code, "random error")
        return b""

    def say_hello(request, context):
        return request

    ident = lambda b: b  # noqa: E731 (raw bytes both ways: no protobuf needed)
    handlers = [
        grpc.method_handlers_generic_handler("grpcbin.GRPCBin", {
            "RandomError": grpc.unary_unary_rpc_method_handler(random_error, ident, ident)}),
        grpc.method_handlers_generic_handler("hello.HelloService", {
            "SayHello": grpc.unary_unary_rpc_method_handler(say_hello, ident, ident)}),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT", port, flush=True)
    server.wait_for_termination()


def grpc_client(port, path):
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        call(b"\x0a\x04Rust", timeout=5)
        print("OK")
    except grpc.RpcError as e:
        print(e.code().name, e.details())


if __name__ == "__main__":
    if sys.argv[1] == "http":
        server = ThreadingHTTPServer(("127.0.0.1", 0), Http)
        print("PORT", server.server_address[1], flush=True)
        server.serve_forever()
    elif sys.argv[1] == "grpc":
        grpc_server()
    else:
        grpc_client(sys.argv[2], sys.argv[3])

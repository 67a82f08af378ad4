"""A gRPC client for the end-to-end tests (Python `grpcio`, plain text). Prints one
JSON object on stdout with what it saw.

    grpc_client.py HOST:PORT calls      a unary call, a server stream, a bidirectional
                                        stream and a call that fails, on
                                        portcullis.test.Echo
    grpc_client.py HOST:PORT unary SVC  one unary call to SVC/Unary: its status
"""

import json
import sys

import grpc

TIMEOUT = 10


def status_of(call):
    try:
        call()
        return {"code": "OK"}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def calls(channel):
    out = {}
    unary = channel.unary_unary("/portcullis.test.Echo/Unary")
    reply, call = unary.with_call(b"hello grpc", timeout=TIMEOUT, metadata=(("x-from-client", "yes"),))
    out["unary"] = reply.decode()
    out["trailers"] = dict(call.trailing_metadata())
    stream = channel.unary_stream("/portcullis.test.Echo/ServerStream")
    out["server_stream"] = [m.decode() for m in stream(b"5", timeout=TIMEOUT)]
    bidi = channel.stream_stream("/portcullis.test.Echo/Bidi")
    out["bidi"] = [m.decode() for m in bidi(iter([b"abc", b"def", b"ghi"]), timeout=TIMEOUT)]
    fail = channel.unary_unary("/portcullis.test.Echo/Fail")
    out["fail"] = status_of(lambda: fail(b"", timeout=TIMEOUT))
    return out


def main():
    target, scenario = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as channel:
        if scenario == "calls":
            out = calls(channel)
        elif scenario == "unary":
            method = channel.unary_unary(f"/{sys.argv[3]}/Unary")
            out = status_of(lambda: method(b"x", timeout=TIMEOUT))
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

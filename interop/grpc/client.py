"""A grpcio (gRPC C-core) client for the echo service, run by interop/tests/grpcio.rs.

usage: client.py TARGET [--tls CA_FILE] [--token TOKEN] [--path PATH]

Makes every kind of call and prints one JSON object per check on stdout; the Rust test
asserts on them. Exits non-zero only for failures of the script itself.
"""
import argparse
import json
import sys
import time

import grpc
from google.rpc import status_pb2

from echo_stubs import ERROR_DETAIL_TYPE, pb, rpc


def report(check, **facts):
    print(json.dumps({"check": check, **facts}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--tls")
    ap.add_argument("--token")
    ap.add_argument("--path")
    ap.add_argument("--authority")
    args = ap.parse_args()

    options = []
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.tls:
        with open(args.tls, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.target, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)
    stub = rpc.EchoStub(channel)
    base = []
    if args.token:
        base.append(("authorization", args.token))
    if args.path:
        base.append(("ferry-path", args.path))

    # Unary, with metadata both ways (ASCII and binary).
    md = base + [("x-echo-trace", "trace-7"), ("x-echo-blob-bin", b"\x00\xff\x01")]
    reply, call = stub.Unary.with_call(
        pb.EchoRequest(payload=b"ping", message="h\u00e9llo"), metadata=md, timeout=10)
    initial = dict(call.initial_metadata())
    report("unary", payload=reply.payload.decode(), message=reply.message,
           trace=initial.get("x-echo-trace"), blob=list(initial.get("x-echo-blob-bin", b"")))

    # Server streaming.
    replies = list(stub.ServerStream(pb.StreamRequest(count=100, size=2048), metadata=base,
                                     timeout=10))
    report("server_stream", count=len(replies), sequences_ok=[r.sequence for r in replies] ==
           list(range(100)), sizes_ok=all(len(r.payload) == 2048 for r in replies))

    # Client streaming: 1 MB in 100 requests.
    reply = stub.ClientStream(iter([pb.EchoRequest(payload=b"z" * 10_000)] * 100),
                              metadata=base, timeout=10)
    report("client_stream", count=reply.sequence, received=reply.received)

    # Bidirectional: requests and replies interleaved.
    def requests():
        for i in range(25):
            yield pb.EchoRequest(payload=i.to_bytes(4, "big"))
    got = [int.from_bytes(r.payload, "big") for r in stub.Bidi(requests(), metadata=base,
                                                                timeout=10)]
    report("bidi", replies=got)

    # An error with details and trailing metadata.
    try:
        stub.Unary(pb.EchoRequest(fail_code=grpc.StatusCode.ALREADY_EXISTS.value[0],
                                  message="order 42 exists"),
                   metadata=base + [("x-echo-order", "42")], timeout=10)
        report("error", code=None)
    except grpc.RpcError as e:
        trailers = dict(e.trailing_metadata() or ())
        detail_code = None
        raw = trailers.get("grpc-status-details-bin")
        if raw:
            status = status_pb2.Status.FromString(raw)
            for any_ in status.details:
                if any_.type_url == ERROR_DETAIL_TYPE:
                    detail = pb.ErrorDetail.FromString(any_.value)
                    detail_code = detail.code
        report("error", code=e.code().name, message=e.details(), detail_code=detail_code,
               order=trailers.get("x-echo-order"))

    # A deadline that expires while the service works.
    started = time.monotonic()
    try:
        stub.Unary(pb.EchoRequest(delay_ms=5000), metadata=base, timeout=0.3)
        report("deadline", code=None)
    except grpc.RpcError as e:
        report("deadline", code=e.code().name, seconds=round(time.monotonic() - started, 3))

    # A large message each way (1 MiB, under the 4 MiB limit).
    big = bytes(range(256)) * 4096
    reply = stub.Unary(pb.EchoRequest(payload=big), metadata=base, timeout=10)
    report("large", same=reply.payload == big)

    # Cancelling a stream from the client side.
    stream = stub.ServerStream(pb.StreamRequest(count=100000, size=10, interval_ms=5),
                               metadata=base, timeout=10)
    next(stream)
    stream.cancel()
    try:
        for _ in stream:
            pass
        report("cancel", code=None)
    except grpc.RpcError as e:
        report("cancel", code=e.code().name)

    # The channel still serves calls afterwards.
    reply = stub.Unary(pb.EchoRequest(payload=b"after"), metadata=base, timeout=10)
    report("after", payload=reply.payload.decode())
    channel.close()


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        sys.exit(f"unexpected RPC failure: {e.code().name}: {e.details()}")

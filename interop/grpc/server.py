"""A grpcio (gRPC C-core) implementation of the echo service, run by interop/tests/grpcio.rs
behind `ferry listen --grpc-to`. Semantics as crates/grpc/src/echo.rs.

usage: server.py   (binds 127.0.0.1:0, prints "listening PORT", serves until killed)
"""
import sys
import time
from concurrent import futures

import grpc
from google.rpc import status_pb2

from echo_stubs import ERROR_DETAIL_TYPE, pb, rpc


def echoed(context):
    return tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-echo-"))


def fail(context, code, message):
    detail = pb.ErrorDetail(reason=f"asked to fail with {code}", code=code)
    status = status_pb2.Status(code=code, message=message)
    any_ = status.details.add()
    any_.type_url = ERROR_DETAIL_TYPE
    any_.value = detail.SerializeToString()
    context.set_trailing_metadata(echoed(context) + (
        ("grpc-status-details-bin", status.SerializeToString()),))
    context.abort(next(c for c in grpc.StatusCode if c.value[0] == code), message)


class Echo(rpc.EchoServicer):
    def Unary(self, request, context):
        context.send_initial_metadata(echoed(context))
        if request.delay_ms:
            time.sleep(request.delay_ms / 1000)
        if request.fail_code:
            fail(context, request.fail_code, request.message)
        return pb.EchoReply(payload=request.payload, message=request.message,
                            received=len(request.payload))

    def ServerStream(self, request, context):
        context.send_initial_metadata(echoed(context))
        for i in range(request.count):
            if i and request.interval_ms:
                time.sleep(request.interval_ms / 1000)
            if not context.is_active():
                return
            yield pb.EchoReply(payload=b"x" * request.size, sequence=i)
        if request.fail_code:
            fail(context, request.fail_code, "stream failed")

    def ClientStream(self, request_iterator, context):
        count = received = 0
        for r in request_iterator:
            if r.fail_code:
                fail(context, r.fail_code, r.message)
            count += 1
            received += len(r.payload)
        return pb.EchoReply(sequence=count, received=received)

    def Bidi(self, request_iterator, context):
        for i, r in enumerate(request_iterator):
            if r.fail_code:
                fail(context, r.fail_code, r.message)
            yield pb.EchoReply(payload=r.payload, message=r.message, sequence=i,
                               received=len(r.payload))


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    rpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())

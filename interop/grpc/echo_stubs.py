"""Generates the Python stubs of proto/echo.proto with grpc_tools (no protoc binary) into a
temporary directory and imports them: `from echo_stubs import pb, rpc`."""
import os
import sys
import tempfile

from grpc_tools import protoc

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROTO_DIR = os.path.normpath(os.path.join(_HERE, "..", "..", "proto"))
_OUT = tempfile.mkdtemp(prefix="ferry-echo-stubs-")
_rc = protoc.main(["grpc_tools.protoc", f"-I{_PROTO_DIR}", f"--python_out={_OUT}",
                   f"--grpc_python_out={_OUT}", os.path.join(_PROTO_DIR, "echo.proto")])
if _rc != 0:
    sys.exit(f"grpc_tools.protoc failed on {_PROTO_DIR}/echo.proto ({_rc})")
sys.path.insert(0, _OUT)

import echo_pb2 as pb  # noqa: E402
import echo_pb2_grpc as rpc  # noqa: E402

ERROR_DETAIL_TYPE = "type.googleapis.com/ferry.example.v1.ErrorDetail"

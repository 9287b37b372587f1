"""The gRPC status table says what the REST table says, and the checked-in stubs match the proto."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import server.errors
from server.api.error_handlers import status_for
from server.errors import HotserveError
from server.grpc_api.status import code_for

ROOT = Path(__file__).resolve().parents[2]
PROTO = "server/protocol/proto/inference.proto"

# The gRPC code of each REST status (the table the issue asks for).
CODE_OF_STATUS = {
    400: {grpc.StatusCode.INVALID_ARGUMENT},
    401: {grpc.StatusCode.UNAUTHENTICATED},
    403: {grpc.StatusCode.PERMISSION_DENIED},
    404: {grpc.StatusCode.NOT_FOUND},
    409: {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED},
    413: {grpc.StatusCode.RESOURCE_EXHAUSTED},
    429: {grpc.StatusCode.RESOURCE_EXHAUSTED},
    500: {grpc.StatusCode.INTERNAL},
    503: {grpc.StatusCode.UNAVAILABLE},
    504: {grpc.StatusCode.DEADLINE_EXCEEDED},
}
ERRORS = [cls for _, cls in inspect.getmembers(server.errors, inspect.isclass) if issubclass(cls, HotserveError)]


@pytest.mark.parametrize("error", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_has_the_grpc_code_of_its_http_status(error: type[HotserveError]) -> None:
    instance = error.__new__(error)  # the tables look at the class only
    assert code_for(instance) in CODE_OF_STATUS[status_for(instance)]


def test_anything_else_is_internal() -> None:
    assert code_for(ValueError("x")) is grpc.StatusCode.INTERNAL


def test_checked_in_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            PROTO,
        ],
        cwd=ROOT,
        check=True,
    )
    for suffix in ("_pb2.py", "_pb2.pyi"):
        generated = (tmp_path / PROTO.replace(".proto", suffix)).read_text()
        assert generated == (ROOT / PROTO.replace(".proto", suffix)).read_text(), (
            f"{suffix} out of date: run scripts/generate-grpc.sh"
        )

"""The gRPC stubs run on every protobuf and grpcio that pyproject.toml allows, and hotserve never
holds back a gRPC client installed beside it.

The checked-in stubs (server/protocol/proto/, scripts/generate-grpc.sh) are protobuf gencode of the
floor of the `protobuf` range; a runtime older than its gencode refuses to load it. Each check builds
a throwaway venv with uv (the one scripts/ensure-uv.sh puts beside the interpreter) from the package
index, loads the stubs there and round-trips a ModelInferRequest through bytes and through a real
grpc.aio call: at the floors of both ranges, at the newest releases they allow, and in this venv
(what uv.lock holds).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

STUBS = REPO / "server" / "protocol" / "proto" / "inference_pb2.py"

PROBE = r"""
import asyncio
import importlib.util
import sys

import google.protobuf
import grpc

spec = importlib.util.spec_from_file_location("inference_pb2", sys.argv[1])
pb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb)

request = pb.ModelInferRequest(model_name="tab", model_version="2", id="r-1")
request.parameters["priority"].int64_param = 3
typed = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
typed.contents.fp32_contents.extend([1.5, -2.0])
request.inputs.add(name="raw", datatype="INT64", shape=[1])
request.raw_input_contents.append((7).to_bytes(8, "little"))
request.outputs.add(name="y").parameters["binary_data"].bool_param = True
assert pb.ModelInferRequest.FromString(request.SerializeToString()) == request


async def infer(received, context):
    answer = pb.ModelInferResponse(model_name=received.model_name, model_version=received.model_version, id=received.id)
    for tensor in received.inputs:
        out = answer.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        out.contents.CopyFrom(tensor.contents)
    answer.raw_output_contents.extend(received.raw_input_contents)
    answer.parameters["echo"].string_param = received.parameters["priority"].WhichOneof("parameter_choice")
    return answer


async def main():
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
    handler = grpc.method_handlers_generic_handler(
        service,
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                f"/{service}/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            reply = await call(request, timeout=60)
    finally:
        await server.stop(None)
    assert (reply.model_name, reply.model_version, reply.id) == ("tab", "2", "r-1"), reply
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.outputs] == [("x", "FP32", [1, 2]), ("raw", "INT64", [1])]
    assert list(reply.outputs[0].contents.fp32_contents) == [1.5, -2.0]
    assert list(reply.raw_output_contents) == [(7).to_bytes(8, "little")]
    assert reply.parameters["echo"].string_param == "int64_param"


asyncio.run(main())
print(google.protobuf.__version__, grpc.__version__)
"""


def _base_requirement(name: str) -> str:
    with (REPO / "pyproject.toml").open("rb") as fh:
        deps: list[str] = tomllib.load(fh)["project"]["dependencies"]
    (found,) = [dep for dep in deps if re.match(rf"{name}\s*[<>=!~]", dep)]
    return found


def _floor(requirement: str) -> str:
    match = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    assert match, f"{requirement}: no >= floor"
    return match.group(1)


def _versions(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


@pytest.fixture(scope="module")
def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv not found beside the interpreter or on PATH: run scripts/setup-env.sh", pytrace=False)
    return found


def _run(cmd: list[str], *, timeout: float = 600) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _probe(python: Path | str) -> tuple[str, str]:
    protobuf, grpcio = _run([str(python), "-c", PROBE, str(STUBS)], timeout=120).split()
    return protobuf, grpcio


def _venv_with(uv: str, where: Path, requirements: list[str]) -> Path:
    _run([uv, "venv", "-q", "--python", sys.executable, str(where)])
    python = where / "bin" / "python"
    _run([uv, "pip", "install", "-q", "--python", str(python), *requirements])
    return python


def test_the_stubs_are_the_gencode_of_the_protobuf_floor() -> None:
    floor = _floor(_base_requirement("protobuf"))
    header = re.search(r"^# Protobuf Python Version: (\S+)$", STUBS.read_text(), re.MULTILINE)
    assert header and header.group(1) == floor, "regenerate with scripts/generate-grpc.sh or move the floor"


def test_the_stubs_run_on_the_lowest_protobuf_and_grpcio_allowed(uv: str, tmp_path: Path) -> None:
    protobuf, grpcio = _floor(_base_requirement("protobuf")), _floor(_base_requirement("grpcio"))
    python = _venv_with(uv, tmp_path / "floors", [f"protobuf=={protobuf}", f"grpcio=={grpcio}"])
    have = _probe(python)
    assert _versions(have[0]) == _versions(protobuf) and _versions(have[1])[:2] == _versions(grpcio)[:2], have


def test_the_stubs_run_on_the_newest_protobuf_and_grpcio_allowed(uv: str, tmp_path: Path) -> None:
    protobuf = _base_requirement("protobuf")
    ceiling = re.search(r"<\s*([0-9]+)\b", protobuf)
    assert ceiling, f"{protobuf}: no major-version ceiling"
    python = _venv_with(uv, tmp_path / "newest", [protobuf, _base_requirement("grpcio")])
    have = _probe(python)
    # The newest the range allows is a release of the last major version below the ceiling.
    assert _versions(have[0])[0] == int(ceiling.group(1)) - 1, have


def test_the_stubs_run_on_what_the_lock_holds() -> None:
    assert _probe(sys.executable)


def test_hotserve_beside_tritonclient_grpc_resolves_to_the_newest_tritonclient(uv: str) -> None:
    """`pip install hotserve 'tritonclient[grpc]'` takes the tritonclient a lone install would."""

    def resolved(*requirements: str) -> str:
        out = subprocess.run(
            [uv, "pip", "compile", "-q", "--no-header", "--no-annotate", "-"],
            input="\n".join(requirements) + "\n",
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr
        (version,) = re.findall(r"^tritonclient==(\S+)$", out.stdout, re.MULTILINE)
        return version

    alone = resolved("tritonclient[grpc]")
    assert resolved(str(REPO), "tritonclient[grpc]") == alone

"""A repository RPC without an accepted token is refused before its message is read: eight
concurrent unauthenticated 60 MB `RepositoryModelLoad` calls on a real `hotserve serve --grpc-port`
(the default 64 MiB message limit) leave the server's peak RSS (VmHWM, reset before the calls) far
below the 480 MB they send, where reading them first took it up by 600-1,000 MB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from load_tests.server_process import ServerProcess, free_port, start_server
from onnx_models import write_tabular
from server.protocol.proto import inference_pb2 as pb

pytestmark = pytest.mark.integration

TOKEN = "grpc-admin-memory-token-0123"
CALLS = 8
MESSAGE_BYTES = 60_000_000
PEAK_GROWTH_BOUND_MIB = 160.0
"""A third of what the calls send (458 MiB): reading them whole would pass it several times over."""
LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    root = tmp_path_factory.mktemp("grpc_admin_memory")
    write_tabular(root / "repository", 1)
    grpc_port = free_port()
    server = start_server(
        root / "repository",
        root / "server.log",
        flags=["--grpc-port", str(grpc_port)],
        env={
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
            "HOTSERVE_ADMIN_TOKEN": TOKEN,
        },
    )
    yield server, f"127.0.0.1:{grpc_port}"
    assert server.stop() == 0, server.log()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def reset_peak_rss(pid: int) -> None:
    """VmHWM back to the current RSS (Linux: `5` to /proc/<pid>/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_unauthenticated_large_repository_loads_are_refused_before_their_message_is_read(
    served: tuple[ServerProcess, str],
) -> None:
    server, address = served
    pid = server.process.pid
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(address, options=options) as channel:
        load = channel.unary_unary(
            LOAD,
            request_serializer=pb.RepositoryModelLoadRequest.SerializeToString,
            response_deserializer=pb.RepositoryModelLoadResponse.FromString,
        )
        load(pb.RepositoryModelLoadRequest(model_name="tab"), metadata=[("authorization", f"Bearer {TOKEN}")])
        reset_peak_rss(pid)
        before = peak_rss_mib(pid)
        huge = pb.RepositoryModelLoadRequest(model_name="x" * MESSAGE_BYTES)
        unauthenticated = [load.future(huge, timeout=120) for _ in range(CALLS // 2)]
        forbidden = [
            load.future(huge, timeout=120, metadata=[("authorization", "Bearer not-a-token-of-this-server")])
            for _ in range(CALLS // 2)
        ]
        codes = [call.exception().code() for call in unauthenticated + forbidden]  # type: ignore[union-attr]
        after = peak_rss_mib(pid)
        print(
            f"\npeak RSS MiB: {before:.0f} before, {after:.0f} after {CALLS} refused {MESSAGE_BYTES / 1e6:.0f} MB calls"
        )
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * (CALLS // 2) + [grpc.StatusCode.PERMISSION_DENIED] * (
            CALLS // 2
        )
        assert after - before < PEAK_GROWTH_BOUND_MIB
        # An accepted token still loads (its message is read as before).
        load(pb.RepositoryModelLoadRequest(model_name="tab"), metadata=[("authorization", f"Bearer {TOKEN}")])

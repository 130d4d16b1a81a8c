"""A real Pushgateway and an OTLP/HTTP receiver for the telemetry tests.

The Pushgateway is Debian's ``prometheus-pushgateway`` (``.ci/run`` installs it when it
can), started by the test on a free port with its persistence file in a temporary folder;
without it those tests are skipped. The OTLP receiver is a small HTTP server inside the
test that decodes each ``POST /v1/traces`` with ``opentelemetry-proto``, as a collector
would.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or (
    "/usr/bin/prometheus-pushgateway" if Path("/usr/bin/prometheus-pushgateway").exists()
    else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Pushgateway:
    url: str
    process: subprocess.Popen[bytes]

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return response.read().decode()

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """The samples of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        found = []
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    found.append((dict(sample.labels), sample.value))
        return found

    def value(self, name: str, **labels: str) -> float:
        found = self.samples(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {found}"
        return found[0][1]

    def groups(self) -> list[dict[str, str]]:
        """The grouping labels of every group pushed (from push_time_seconds)."""
        return [labels for labels, _ in self.samples("push_time_seconds")]


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """One Pushgateway per test module (per xdist worker running it)."""
    tmp_path = tmp_path_factory.mktemp("pushgateway")
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway is not installed (Debian: apt-get install "
                    "prometheus-pushgateway)")
    port = free_port()
    log = (tmp_path / "pushgateway.log").open("wb")
    process = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
         f"--persistence.file={tmp_path / 'pushgateway.data'}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("the Pushgateway did not start: "
                            + (tmp_path / "pushgateway.log").read_text())
            time.sleep(0.1)
        yield Pushgateway(url, process)
    finally:
        process.kill()  # a throwaway: no need to wait for it to persist its data
        process.wait()
        log.close()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start: int
    end: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any]


@dataclass
class OtlpReceiver:
    endpoint: str
    requests: list[Any] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def spans(self) -> list[Span]:
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value)
                            for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(Span(
                            span.name, span.trace_id.hex(), span.span_id.hex(),
                            span.parent_span_id.hex(), span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            {a.key: _value(a.value) for a in span.attributes},
                            span.status.code, span.status.message, resource))
        return found

    def raw(self) -> bytes:
        return b"".join(r.SerializeToString() for r in self.requests)


@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    pytest.importorskip("opentelemetry.proto", reason="pip install opentelemetry-proto")
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    receiver = OtlpReceiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.paths.append(self.path)
            receiver.requests.append(request)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(RuntimeError):
            thread.join(5)

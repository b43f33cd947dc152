"""Every process of the stack, as `make run` and compose start it, serves its Prometheus
endpoint on the port its *_METRICS_PORT=0 let the OS pick, which it names in its log."""

from __future__ import annotations

import pytest
from loom.content.v1 import tenancy_pb2

from tests.integration.stack import StackInfo, module_of
from tests.support import Clients, scrape, wait_until

# A family each process's endpoint must declare.
OWN_FAMILY = {
    "content_service": "loom_outbox_pending_rows",
    "vector_service": "loom_vector_rows",
    "image_worker": "loom_worker_jobs_claimed",
}


def test_every_process_serves_its_metrics(stack: StackInfo, admin: Clients) -> None:
    if stack.local is None:
        pytest.skip("an existing stack: its metrics ports are its deployment's")
    admin.tenancy.CreateTeam(tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name="metrics")))
    for proc in stack.local.running:
        module = module_of(proc.command) or proc.name
        wait_until(lambda p=proc: p.metrics_port, 10, f"{module} to log its metrics endpoint")
        found = scrape(proc.metrics_port)
        assert OWN_FAMILY[module] in found.families, module
        assert found.has("process_cpu_seconds_total"), module
    content = next(p for p in stack.local.running if module_of(p.command) == "content_service")
    handled = scrape(content.metrics_port)
    assert handled.value("grpc_server_handled_total", grpc_method="CreateTeam", grpc_code="OK") >= 1

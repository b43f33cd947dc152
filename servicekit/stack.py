"""`python -m servicekit.stack`: the whole stack in the foreground on embedded defaults.

Migrates the database, then runs each process with the same command docker-compose uses,
prefixing their logs. Ctrl-C / SIGTERM stops them all gracefully (honcho forwards the signal
and waits). If the supervisor itself dies (SIGKILL, a closed terminal), the processes notice
and stop too (servicekit.lifeline). A port already taken is one line naming its setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from servicekit.lifeline import ENV as SUPERVISOR_ENV
from servicekit.server import PortInUse, check_free

# The servers' listen settings: (host variable, port variable, default port).
LISTENERS = (
    ("CONTENT_HOST", "CONTENT_PORT", "50051"),
    ("CONTENT_MEDIA_HTTP_HOST", "CONTENT_MEDIA_HTTP_PORT", "50053"),
    ("VECTOR_HOST", "VECTOR_PORT", "50052"),
)

# The processes of the stack, by the command compose also runs.
PROCESSES = {
    "content": [sys.executable, "-m", "content_service", "serve"],
    "vector": [sys.executable, "-m", "vector_service"],
    "worker": [sys.executable, "-m", "image_worker"],
}


def main() -> int:
    from honcho.manager import Manager

    data_dir = Path(os.environ.get("DATA_DIR", "data")).resolve()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        SUPERVISOR_ENV: str(os.getpid()),
    }
    for host_setting, port_setting, default in LISTENERS:
        port = env.get(port_setting, default)
        try:
            check_free(env.get(host_setting, "127.0.0.1"), int(port))
        except PortInUse:
            print(
                f"make run: port {port} ({port_setting}) is already in use; is another stack "
                f"running? Stop it, or set {port_setting} to another port.",
                file=sys.stderr,
            )
            return 1
    # Each process finds the others on loopback, at the ports the environment chose.
    content = f"127.0.0.1:{env.get('CONTENT_PORT', '50051')}"
    vector = f"127.0.0.1:{env.get('VECTOR_PORT', '50052')}"
    for name, address in (
        ("CONTENT_VECTOR_ADDRESS", vector),
        ("VECTOR_CONTENT_ADDRESS", content),
        ("WORKER_CONTENT_ADDRESS", content),
        ("WORKER_VECTOR_ADDRESS", vector),
    ):
        env.setdefault(name, address)
    migrate = subprocess.run(
        [sys.executable, "-m", "content_service", "migrate"], env=env, check=False
    )
    if migrate.returncode != 0:
        return migrate.returncode
    port = env.get("CONTENT_PORT", "50051")
    admin = (
        "$CONTENT_ADMIN_KEY" if env.get("CONTENT_ADMIN_KEY") else f"$(cat {data_dir / 'admin.key'})"
    )
    print(
        f"data in {data_dir}\n"
        f"try:  .venv/bin/grpcurl -plaintext localhost:{port} list\n"
        f'admin: .venv/bin/grpcurl -plaintext -H "authorization: Bearer {admin}" ...\n'
        "(the admin key file is created on first start, mode 0600)",
        flush=True,
    )
    manager = Manager()
    for name, command in PROCESSES.items():
        # exec: the process itself gets the signal honcho forwards, not an intermediate shell.
        manager.add_process(name, "exec " + " ".join(command), env=env)
    manager.loop()
    return int(manager.returncode or 0)


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedded AWS emulator: moto in server mode, a real HTTP endpoint in a child process.

A child process keeps the emulator's work off the worker's event loop and GIL. Run
``python -m service.tools.emulator --port 0``: it prints ``listening <url>`` once ready and
stops when its standard input closes (so it never outlives its parent) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from types import TracebackType
from typing import Any, Self

READY_PREFIX = "listening "


class Emulator:
    """A moto server child process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.server_pid: int | None = None  # the process that serves (CPU figures)
        self._process: subprocess.Popen[str] | None = None

    # Seconds stop() gives the child after closing its stdin, before killing it.
    stop_timeout = 5.0

    def command(self) -> list[str]:
        """The child's command line: it prints ``listening <url>`` once it serves."""
        return [
            sys.executable,
            "-m",
            "service.tools.emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the child and return its endpoint URL."""
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            # Its own session: Ctrl-C in a terminal signals the whole foreground process
            # group, and the emulator must outlive the worker's drain. It stops when its
            # stdin closes (see stop()), so it never outlives this process either.
            start_new_session=True,
        )
        line = self._process.stdout.readline() if self._process.stdout else ""
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"the AWS emulator did not start: {line!r}")
        # "listening <url>", and the serving process's id where that is not the child.
        url, *server = line[len(READY_PREFIX) :].split()
        self.url = url
        self.server_pid = int(server[0]) if server else self._process.pid
        return self.url

    def reset(self) -> None:
        """Forget every resource (moto's reset endpoint)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            response.read()

    def stop(self) -> None:
        """Stop the child (closing its stdin), killing it if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AtomicDynamoDB:
    """WSGI middleware: one DynamoDB request at a time.

    Real DynamoDB applies each UpdateItem and conditional PutItem atomically; moto's
    threaded server does not (two concurrent UpdateItems on one item can lose a write),
    and the service's correctness rests on that atomicity. SQS and EventBridge requests
    stay concurrent, so long polls never block the emulator.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with self.lock:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def cheap_transaction_rollback() -> None:
    """Make moto's TransactWriteItems cost what it costs in DynamoDB: O(items), not O(table).

    moto 5 deep-copies the whole table once per action of a transaction, to roll back on
    failure: with 40,000 items a flush of 100 took minutes and gigabytes, and a long demo
    would slow down as its table grows. Here the transaction sees a ``copy`` module whose
    ``deepcopy`` hands tables back as they are, and the rollback restores only the items
    the transaction targets (snapshotted first). Requests are serialized by
    ``AtomicDynamoDB``, so nobody sees the items between the failure and the restore.
    """
    import copy  # noqa: PLC0415

    from moto.dynamodb import models  # noqa: PLC0415
    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    class _TablesUncopied:
        @staticmethod
        def deepcopy(value: Any) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value)

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshot = []
        for action in transact_items:
            op = next(iter(action.values()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue  # moto raises its own error for that
            key = op.get("Key")
            if key is None and "Item" in op:
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            if key is not None:
                before = self.get_item(op["TableName"], key)
                snapshot.append((op["TableName"], key, copy.deepcopy(before)))
        setattr(models, "copy", _TablesUncopied)  # noqa: B010 - moto's own module global
        try:
            original(self, transact_items)
        except Exception:
            for table_name, key, before in reversed(snapshot):
                if before is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before.to_json()["Attributes"])
            raise
        finally:
            setattr(models, "copy", copy)  # noqa: B010

    setattr(models.DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010


def main() -> None:
    """Serve moto until stdin closes."""
    parser = argparse.ArgumentParser(description="moto server for wait-times")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # Only the emulator needs moto and werkzeug; the production image has neither.
    from moto.moto_server.werkzeug_app import (  # noqa: PLC0415
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    cheap_transaction_rollback()
    app = AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"{READY_PREFIX}http://{args.host}:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()

"""Lambda functions offline: the real handler of `functions/<name>/app.py`, in-process.

moto (with `lambda.use_docker = False`) answers every invoke by echoing the payload.
`LambdaRouter` replaces that answer, in one place, with a call of the real handler:
the function's environment variables (template Globals + function) are set while the
handler runs, the handler module is imported under a unique name the first time (after
the environment is set, so import-time settings see it), and an exception comes back as
a Lambda error (`x-amz-function-error` + `{"errorType", "errorMessage"}`), so the state
machine's Retry and Catch see exactly what they would see on AWS.

Invocations run one at a time (one lock): `os.environ` and `sys.stdout` are process-wide
and moto's DynamoDB/S3 are in-process and CPU-bound, so nothing is lost by it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

Handler = Callable[[Any, Any], Any]
_LOCK = threading.RLock()
_MODULE_COUNTER = iter(range(1, 1_000_000_000))


class LambdaContext:
    """The parts of the Lambda context object handlers and Powertools use."""

    def __init__(self, function_name: str, function_arn: str, memory_mb: int, timeout_s: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"offline/{self.aws_request_id}"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _StdoutProxy(io.TextIOBase):
    """Where handler output (Powertools JSON logs, EMF metrics) goes. Loggers keep the
    stream object they were created with, so this object stays and its target moves."""

    def __init__(self) -> None:
        self.target: TextIO = sys.__stderr__ or sys.stderr

    def write(self, s: str) -> int:
        try:
            return self.target.write(s)
        except ValueError:  # target closed (an earlier environment): fall back
            self.target = sys.__stderr__ or sys.stderr
            return self.target.write(s)

    def flush(self) -> None:
        with contextlib.suppress(ValueError):
            self.target.flush()

    def writable(self) -> bool:
        return True


HANDLER_OUTPUT = _StdoutProxy()


@dataclass
class InjectedFailure:
    """A failure the harness raises instead of calling the handler (tests: Retry/Catch)."""

    error: str  # errorType as the state machine sees it, e.g. "TransientError"
    times: int = 1
    when: Callable[[Any], bool] | None = None  # only events this predicate accepts
    raised: int = 0


@dataclass
class Call:
    """One invocation as the harness saw it (tests assert retries on it)."""

    logical_id: str
    event: Any
    error_type: str | None
    result: Any = None
    seconds: float = 0.0


@dataclass
class FunctionRoute:
    """One Lambda function of the template and the code that serves it."""

    logical_id: str
    function_name: str
    function_arn: str
    code_dir: Path
    handler: str  # "module.function", e.g. app.lambda_handler
    environment: dict[str, str] = field(default_factory=dict)
    memory_mb: int = 128
    timeout_s: int = 3
    invocations: int = 0
    errors: int = 0
    _callable: Handler | None = None
    _module: ModuleType | None = None

    def load(self) -> Handler:
        if self._callable is None:
            module_name, _, func_name = self.handler.rpartition(".")
            path = self.code_dir / (module_name.replace(".", "/") + ".py")
            if not path.is_file():
                raise FileNotFoundError(f"{self.logical_id}: handler file {path} not found")
            unique = f"rxguard_offline_{self.logical_id}_{next(_MODULE_COUNTER)}"
            spec = importlib.util.spec_from_file_location(unique, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{self.logical_id}: cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            sys.path.insert(0, str(self.code_dir))  # sibling modules of app.py, as in Lambda
            try:
                spec.loader.exec_module(module)
            finally:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(self.code_dir))
            self._module = module
            self._callable = getattr(module, func_name)
        return self._callable

    def unload(self) -> None:
        if self._module is not None:
            sys.modules.pop(self._module.__name__, None)
        self._module = None
        self._callable = None


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LambdaRouter:
    """Maps function names/ARNs to routes and runs invocations."""

    def __init__(self, region: str, base_environment: Mapping[str, str] | None = None) -> None:
        self.region = region
        self.routes: dict[str, FunctionRoute] = {}
        self.failures: dict[str, list[InjectedFailure]] = {}
        self.base_environment = dict(base_environment or {})
        self.calls: list[Call] = []
        self.on_invoke: Callable[[FunctionRoute, Any, Any, BaseException | None], None] | None = None

    def add(self, route: FunctionRoute) -> None:
        self.routes[route.function_name] = route

    def route_for(self, name_or_arn: str) -> FunctionRoute | None:
        if name_or_arn in self.routes:
            return self.routes[name_or_arn]
        for route in self.routes.values():
            if name_or_arn in (route.function_arn, route.logical_id) or name_or_arn.startswith(
                route.function_arn + ":"
            ):
                return route
        return None

    def inject_failure(
        self, function: str, error: str = "TransientError", times: int = 1, when: Callable[[Any], bool] | None = None
    ) -> InjectedFailure:
        route = self.route_for(function)
        if route is None:
            raise KeyError(f"no Lambda function {function!r} in the template")
        failure = InjectedFailure(error=error, times=times, when=when)
        self.failures.setdefault(route.function_name, []).append(failure)
        return failure

    def _injected(self, route: FunctionRoute, event: Any) -> InjectedFailure | None:
        for failure in self.failures.get(route.function_name, []):
            if failure.raised < failure.times and (failure.when is None or failure.when(event)):
                failure.raised += 1
                return failure
        return None

    def invoke(self, route: FunctionRoute, event: Any) -> tuple[bytes, bool]:
        """Run the handler; returns (payload, errored) as Lambda would put them on the wire."""
        with _LOCK:
            route.invocations += 1
            env = {
                **self.base_environment,
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_LAMBDA_FUNCTION_NAME": route.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(route.memory_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                **route.environment,
            }
            error: BaseException | None = None
            result: Any = None
            began = time.monotonic()
            with _patched_environ(env), contextlib.redirect_stdout(HANDLER_OUTPUT):
                try:
                    failure = self._injected(route, event)
                    if failure is not None:
                        raise type(failure.error, (Exception,), {})(
                            f"injected by the offline harness ({failure.raised}/{failure.times})"
                        )
                    handler = route.load()
                    context = LambdaContext(route.function_name, route.function_arn, route.memory_mb, route.timeout_s)
                    result = handler(event, context)
                except Exception as exc:  # every handler error becomes a Lambda function error
                    error = exc
            self.calls.append(
                Call(route.logical_id, event, type(error).__name__ if error else None, result, time.monotonic() - began)
            )
            if self.on_invoke is not None:
                self.on_invoke(route, event, result, error)
            if error is not None:
                route.errors += 1
                body = {
                    "errorType": type(error).__name__,
                    "errorMessage": str(error),
                    "stackTrace": traceback.format_exception(error)[-5:],
                }
                return json.dumps(body).encode(), True
            return json.dumps(result, default=str).encode(), False

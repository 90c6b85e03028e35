"""An online scoring server that batches concurrent requests into one ``predict`` (one constrained beam search).

``mlflow models serve`` runs one ``predict`` per request, in a thread pool: at concurrency 8 on 2 cores the
requests' beam searches compete for the cores and each waits for the others. This server speaks the same
scoring protocol and answers the same predictions, but collects the requests that arrive together and ranks
their rows in one call:

* **Protocol.** ``POST /invocations`` with ``{"dataframe_split": ...}``, ``{"dataframe_records": ...}``,
  ``{"instances": ...}`` or ``{"inputs": ...}`` and optional ``"params"`` (also ``text/csv`` and Parquet bodies),
  ``GET /ping``, ``GET /health``, ``GET /version``; answers ``{"predictions": [...]}`` and MLflow's error JSON
  (``error_code``, ``message``, ``stack_trace``) with MLflow's status codes. The parsing, the schema and params
  enforcement and the JSON encoding are MLflow 3.17's own functions (``mlflow.pyfunc.scoring_server``), so a
  client of ``mlflow models serve`` works unchanged. ``GET /metrics`` (JSON) adds the batching counters; every
  answer carries ``X-Digr-Batch-Requests`` / ``X-Digr-Batch-Rows`` (the batch it was ranked in).
* **Batching policy.** One batcher task takes the oldest waiting request and keeps collecting until
  ``max_batch_rows`` rows are together or ``max_wait_ms`` have passed *since that oldest request arrived*
  (requests that queued while the previous batch ran are taken at once, without waiting again). Requests with
  equal params (after MLflow fills in their defaults) are concatenated and ranked by one ``predict``; each gets
  its own rows back. One predict runs at a time, on one inference thread (``--torch-threads`` intra-op threads,
  default every core but one), while the event loop keeps accepting, checking and answering requests.
* **Error isolation.** Each request is parsed and checked alone before it joins a batch: MLflow's schema and
  params enforcement, then the model's own ``validate_input`` (``DeepInterestGRModel``: empty or all-unknown
  history, bad params) — a bad request is answered 400 at once and never reaches a batch. Should a batch's
  ``predict`` still fail, every request of it is ranked alone, so only the one at fault gets the error.

    python -m serving.batching_server --model deepinterestgr --alias champion --host 127.0.0.1 --port 5002 \\
        --max-batch-rows 64 --max-wait-ms 5

The model is the version the alias points at when the server starts (``models:/<name>/<version>``; ``/metrics``
names it); restart the server to pick up a new champion. No Dagster here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from io import BytesIO, StringIO
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import Response

DEFAULT_MAX_BATCH_ROWS = 64
DEFAULT_MAX_WAIT_MS = 5.0
BATCH_REQUESTS_HEADER = "X-Digr-Batch-Requests"
BATCH_ROWS_HEADER = "X-Digr-Batch-Rows"
#: MLflow's answer to a request its model cannot evaluate (400); the model's own error text is appended
UNEXPECTED_ERROR = ("Encountered an unexpected error while evaluating the model. Verify that the serialized input "
                    "Dataframe is compatible with the model for inference.")

_logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """Counters of the batcher (``GET /metrics``)."""

    requests: int = 0  # requests that reached the batcher (checked and well-formed)
    rows: int = 0
    batches: int = 0  # times the batcher took a group of waiting requests
    predict_calls: int = 0  # model predict calls, fallbacks included
    fallback_predict_calls: int = 0  # per-request predicts after a failed batch predict
    failed_requests: int = 0  # requests answered with an error by predict
    rejected_requests: int = 0  # requests answered 4xx before batching (parse, schema, model check)
    largest_batch_requests: int = 0
    largest_batch_rows: int = 0
    predict_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["predict_seconds"] = round(self.predict_seconds, 4)
        out["mean_batch_requests"] = round(self.requests / self.batches, 3) if self.batches else 0.0
        return out


@dataclass
class _Pending:
    frame: pd.DataFrame
    params: dict[str, Any] | None
    key: str
    arrived: float
    future: asyncio.Future = field(repr=False)


@dataclass(frozen=True)
class BatchAnswer:
    """One request's rows of a batch's predictions, and the size of the batch that ranked them."""

    predictions: Any
    batch_requests: int
    batch_rows: int


def params_key(params: dict[str, Any] | None) -> str:
    """Requests batch together only when this key is equal (the params as canonical JSON)."""
    return json.dumps(params or {}, sort_keys=True, default=repr)


class MicroBatcher:
    """Collects concurrent ``submit`` calls and runs one ``predict(frame, params)`` per group of equal params.

    ``predict`` must return one row per input row, in order; ``split(out, sizes)`` cuts its answer into one part per
    request (default :func:`split_rows`: DataFrame/Series rows by ``iloc``, anything else by slicing). Both run on
    one dedicated thread, one batch at a time, so the event loop only queues and answers. Use inside a running
    event loop: ``await start()``, ``await submit(frame, params)``, ``await stop()``.
    """

    def __init__(self, predict: Callable[[pd.DataFrame, dict[str, Any] | None], Any], *,
                 max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS, max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
                 split: Callable[[Any, list[int]], list[Any]] | None = None) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._predict = predict
        self._split = split or split_rows
        self.max_batch_rows = int(max_batch_rows)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._carry: deque[_Pending] = deque()  # taken out of the queue but over the last batch's row budget
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digr-predict")
        self._task = asyncio.create_task(self._run_forever(), name="digr-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        pending = list(self._carry)
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, frame: pd.DataFrame, params: dict[str, Any] | None) -> BatchAnswer:
        """This request's predictions, ranked together with whatever arrived with it."""
        if self._queue is None or self._loop is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future = self._loop.create_future()
        await self._queue.put(_Pending(frame, params, params_key(params), self._loop.time(), future))
        return await future

    async def _next(self, timeout: float | None) -> _Pending | None:
        if self._carry:
            return self._carry.popleft()
        assert self._queue is not None
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _run_forever(self) -> None:
        assert self._loop is not None
        while True:
            first = await self._next(None)
            batch, rows = [first], len(first.frame)
            deadline = first.arrived + self.max_wait_s
            while rows < self.max_batch_rows:
                item = await self._next(deadline - self._loop.time())
                if item is None:
                    break
                if rows + len(item.frame) > self.max_batch_rows:
                    self._carry.append(item)  # first in the next batch
                    break
                batch.append(item)
                rows += len(item.frame)
            live = [p for p in batch if not p.future.done()]  # a client that gave up is not ranked
            if live:
                try:
                    await self._run_batch(live)
                except Exception as exc:  # a bug here must not kill the batcher: fail this batch only
                    _logger.exception("batch failed")
                    for p in live:
                        if not p.future.done():
                            p.future.set_exception(exc)

    def _predict_split(self, frame: pd.DataFrame, params: dict[str, Any] | None, sizes: list[int]) -> list[Any]:
        out = self._predict(frame, params)
        if len(out) != len(frame):
            raise RuntimeError(f"predict answered {len(out)} rows for {len(frame)}")
        return self._split(out, sizes)

    async def _call(self, frame: pd.DataFrame, params: dict[str, Any] | None, sizes: list[int]) -> list[Any]:
        """Predict on the inference thread and split the answer per request (sizes: each request's rows)."""
        assert self._loop is not None
        t0 = time.perf_counter()
        try:
            return await self._loop.run_in_executor(self._executor, self._predict_split, frame, params, sizes)
        finally:
            self.stats.predict_calls += 1
            self.stats.predict_seconds += time.perf_counter() - t0

    async def _run_batch(self, batch: list[_Pending]) -> None:
        stats = self.stats
        rows = sum(len(p.frame) for p in batch)
        stats.batches += 1
        stats.requests += len(batch)
        stats.rows += rows
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(batch))
        stats.largest_batch_rows = max(stats.largest_batch_rows, rows)
        groups: dict[str, list[_Pending]] = {}
        for p in batch:
            groups.setdefault(p.key, []).append(p)
        for group in groups.values():
            frame = group[0].frame if len(group) == 1 else pd.concat([p.frame for p in group], ignore_index=True)
            sizes = [len(p.frame) for p in group]
            try:
                parts = await self._call(frame, group[0].params, sizes)
            except Exception as exc:
                if len(group) == 1:
                    stats.failed_requests += 1
                    _set(group[0].future, exc=exc)
                    continue
                # one request of the batch may be at fault: rank each alone, so only that one fails
                for p in group:
                    stats.fallback_predict_calls += 1
                    try:
                        (alone,) = await self._call(p.frame, p.params, [len(p.frame)])
                    except Exception as own:
                        stats.failed_requests += 1
                        _set(p.future, exc=own)
                    else:
                        _set(p.future, BatchAnswer(alone, 1, len(p.frame)))
                continue
            for p, part in zip(group, parts, strict=True):
                _set(p.future, BatchAnswer(part, len(group), len(frame)))


def split_rows(out: Any, sizes: list[int]) -> list[Any]:
    """``out`` cut into consecutive parts of ``sizes`` rows (DataFrame/Series by ``iloc``, with fresh indexes)."""
    parts, start = [], 0
    pandas = isinstance(out, pd.DataFrame | pd.Series)
    for size in sizes:
        parts.append(out.iloc[start : start + size].reset_index(drop=True) if pandas else out[start : start + size])
        start += size
    return parts


def _set(future: asyncio.Future, value: Any = None, *, exc: BaseException | None = None) -> None:
    if future.done():  # the client gave up (timeout, disconnect)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


# --------------------------------------------------------------------------- the HTTP app


def _python_model(model: Any) -> Any:
    try:
        return model.unwrap_python_model()
    except Exception:  # not a PythonModel flavour: no model-level check, the fallback isolates errors
        return None


class _RequestRejected(Exception):
    """A request answered before batching (415 for the content type, or an MlflowException)."""

    def __init__(self, response: Any) -> None:
        super().__init__()
        self.response = response


def create_app(model: Any, *, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
               max_wait_ms: float = DEFAULT_MAX_WAIT_MS, model_info: dict[str, Any] | None = None,
               timeout_s: float | None = None):
    """The FastAPI app serving ``model`` (a loaded pyfunc) with micro-batching; see the module docstring."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT, MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST
    from mlflow.pyfunc import _validate_prediction_input
    from mlflow.pyfunc import scoring_server as ss
    from mlflow.version import VERSION

    metadata = model.metadata
    input_schema = metadata.get_input_schema()
    params_schema = metadata.get_params_schema()
    loader_module = getattr(model, "loader_module", None)
    python_model = _python_model(model)
    validate_input = getattr(python_model, "validate_input", None)
    # every request is schema-checked alone (prepare), so the batch goes straight to the model implementation
    # (MLflow's stable developer API): requests with and without optional columns concatenate with missing
    # cells, which the model reads as absent but a second schema enforcement of the whole batch would refuse
    impl = getattr(model, "_model_impl", None)
    predict = impl.predict if impl is not None and hasattr(impl, "predict") else model.predict

    def split_records(out: Any, sizes: list[int]) -> list[Any]:
        # what MLflow's predictions_to_json encodes, built once per batch on the inference thread: the rows of a
        # DataFrame as records (a request's slice of them is exactly the records of its slice of the frame)
        records = ss._get_jsonable_obj(out, pandas_orient="records")
        return split_rows(records, sizes)

    batcher = MicroBatcher(lambda frame, params: predict(frame, params=params), split=split_records,
                           max_batch_rows=max_batch_rows, max_wait_ms=max_wait_ms)
    timeout = float(timeout_s if timeout_s is not None else MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())
    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"  # as MLflow's scoring server does

    def error_response(exc: MlflowException) -> Response:
        return Response(content=exc.serialize_as_json(), status_code=exc.get_http_status_code(),
                        media_type="application/json")

    def unexpected(exc: BaseException) -> MlflowException:
        """MLflow's 400 for an exception of the model, with the model's own message appended."""
        text = "".join(traceback.format_exception(exc))
        return MlflowException(message=f"{UNEXPECTED_ERROR} Error: {exc}", error_code=BAD_REQUEST, stack_trace=text)

    def prepare(body: bytes, content_type: str | None) -> tuple[Any, dict | None, bool]:
        """Parse and check one request as MLflow's ``invocations`` does, without predicting: (data, params, whether
        the answer is unwrapped LLM JSON); raises _RequestRejected with the answer to give otherwise."""
        type_parts = [p.strip() for p in (content_type or "").split(";")]
        mime_type, pairs = type_parts[0], type_parts[1:]
        values = {key: value for pair in pairs for key, _, value in [pair.partition("=")]}
        if values.get("charset", "utf-8").lower() != "utf-8":
            raise _RequestRejected(Response("The scoring server only supports UTF-8", 415, media_type="text/plain"))
        if unexpected_params := set(values).difference({"charset"}):
            raise _RequestRejected(Response(
                f"Unrecognized content type parameters: {', '.join(unexpected_params)}. "
                f"{ss.SCORING_PROTOCOL_CHANGE_INFO}", 415, media_type="text/plain"))
        unified = False
        if mime_type == ss.CONTENT_TYPE_JSON:
            parsed = ss._parse_json_data(body, metadata, input_schema)
            data, params, unified = parsed.data, parsed.params, parsed.is_unified_llm_input
        elif mime_type == ss.CONTENT_TYPE_CSV:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as ex:
                raise ss.MlflowInvalidInputException(
                    f"Ensure that input is a valid UTF-8 encoded string. Error: '{ex!r}'") from ex
            data, params = ss.parse_csv_input(csv_input=StringIO(text), schema=input_schema), None
        elif mime_type == ss.CONTENT_TYPE_PARQUET:
            data, params = ss.parse_parquet_input(parquet_input=BytesIO(body)), None
        else:
            raise _RequestRejected(Response(
                f"This predictor only supports the following content types: Types: {ss.CONTENT_TYPES}. "
                f"Got '{content_type}'.", 415, media_type="text/plain"))
        try:
            data, params = _validate_prediction_input(data, params, input_schema, params_schema, loader_module)
        except MlflowException as e:  # MLflow raises these from predict: same message prefix
            e.message = f"Failed to predict data '{data}'. \nError: {e.message}"
            raise
        if validate_input is not None:
            try:
                validate_input(data, params)
            except Exception as exc:
                raise unexpected(exc) from exc
        return data, params, unified

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(lifespan=lifespan)
    app.state.batcher = batcher

    async def ping():
        return Response(content="\n", status_code=200, media_type="application/json")

    app.get("/ping")(ping)
    app.get("/health")(ping)

    @app.get("/version")
    async def version():
        return Response(content=VERSION, status_code=200, media_type="application/json")

    @app.get("/metrics")
    async def metrics():
        body = {**batcher.stats.to_dict(), "max_batch_rows": batcher.max_batch_rows,
                "max_wait_ms": batcher.max_wait_s * 1000.0, "model": model_info or {}}
        return Response(content=json.dumps(body), status_code=200, media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request):
        # MLflow's limit on a request (its server applies it as an HTTP middleware; here in the one route that can
        # take long, sparing every request the middleware's extra task and streams)
        try:
            return await asyncio.wait_for(answer(request), timeout=timeout)
        except TimeoutError:
            return Response(content="Request processing time exceeded limit", status_code=504,
                            media_type="application/json")

    async def answer(request: Request) -> Response:
        body = await request.body()
        try:
            data, params, unified = prepare(body, request.headers.get("content-type"))
        except _RequestRejected as rejected:
            batcher.stats.rejected_requests += 1
            return rejected.response
        except MlflowException as e:
            batcher.stats.rejected_requests += 1
            return error_response(e)
        except Exception as exc:  # a body MLflow's parsers choke on: the request's fault, not the server's
            batcher.stats.rejected_requests += 1
            return error_response(unexpected(exc))
        try:
            result = await batcher.submit(data, params)
        except MlflowException as e:
            e.message = f"Failed to predict data '{data}'. \nError: {e.message}"
            return error_response(e)
        except Exception as exc:
            return error_response(unexpected(exc))
        # the bytes MLflow's predictions_to_json / unwrapped_predictions_to_json write for these records
        content = json.dumps(result.predictions if unified else {"predictions": result.predictions},
                             cls=ss.NumpyEncoder)
        return Response(content=content, status_code=200, media_type="application/json",
                        headers={BATCH_REQUESTS_HEADER: str(result.batch_requests),
                                 BATCH_ROWS_HEADER: str(result.batch_rows)})

    return app


def default_torch_threads() -> int:
    """Intra-op threads for the one inference thread: every core but one (the event loop's), at least 1. More
    threads than free cores make each parallel op wait for a descheduled thread: on 2 busy cores a 64-row beam
    search took 2.6 s with 2 threads and 83 ms with 1 (measured for this server)."""
    return max(1, (os.cpu_count() or 1) - 1)


def load_served_model(*, model: str, alias: str, model_uri: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The pyfunc to serve and what ``/metrics`` says about it: ``model_uri`` as given, else the version ``alias``
    of registered model ``model`` points at now (loaded by version number)."""
    import mlflow

    from serving.batch_scoring import load_model, resolve_model

    if model_uri:
        return mlflow.pyfunc.load_model(model_uri), {"uri": model_uri}
    ref = resolve_model(mlflow.MlflowClient(), model, alias)
    return load_model(ref), {**asdict(ref), "uri": ref.uri}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.batching_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deepinterestgr", help="registered model name")
    parser.add_argument("--alias", default="champion", help="registry alias to serve (resolved once, at start)")
    parser.add_argument("--model-uri", help="serve this model URI instead (models:/name/3, runs:/..., a path)")
    parser.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--max-batch-rows", type=int, default=DEFAULT_MAX_BATCH_ROWS,
                        help="rows ranked together at most (the pyfunc beam-searches 64 rows at a time)")
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                        help="how long the oldest waiting request may wait for others to join its batch")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads of the inference thread (default: one core less than the "
                             "machine has, at least 1: the event loop parses and answers requests on the other)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="answer 504 after this long (default $MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT or 60)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.max_batch_rows < 1 or args.max_wait_ms < 0 or (args.torch_threads is not None and args.torch_threads < 1):
        parser.error("--max-batch-rows and --torch-threads must be >= 1, --max-wait-ms >= 0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import uvicorn

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_registry_uri(args.tracking_uri)
    import torch

    torch.set_num_threads(args.torch_threads or default_torch_threads())
    t0 = time.perf_counter()
    try:
        model, info = load_served_model(model=args.model, alias=args.alias, model_uri=args.model_uri)
    except LookupError as exc:
        print(f"batching_server: {exc}", file=sys.stderr)
        return 2
    app = create_app(model, max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms, model_info=info,
                     timeout_s=args.timeout_s)
    print(f"serving {info.get('uri')} on http://{args.host}:{args.port} (loaded in {time.perf_counter() - t0:.1f} s; "
          f"max {args.max_batch_rows} rows / {args.max_wait_ms:g} ms per batch; {torch.get_num_threads()} torch "
          "threads)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

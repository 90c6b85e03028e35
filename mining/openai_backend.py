"""Backend for any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, Ollama, llama.cpp, hosted APIs).

Registered as backend ``openai``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import math
import os
import random
import socket
import ssl
import sys
import time

import httpx

from mining.backends import ChatRequest, Completion, LLMError, MinerConfig, register_backend

logger = logging.getLogger(__name__)

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore tries `import sniffio` on every request; when it is not installed, each failed import
    # searches sys.path again (~2 ms). A None entry makes the same ImportError immediate.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@register_backend("openai")
class OpenAIBackend:
    """POST {base_url}/chat/completions with bounded concurrency, rate limiting and retries.

    The API key is read from ``os.environ[api_key_env]`` at call time and sent only in the Authorization
    header: it is never stored on the object, logged, or put into error messages.
    """

    kind = "openai"

    @staticmethod
    def config_problems(cfg: MinerConfig) -> list[str]:
        """Settings checks of an openai miner."""
        problems = []
        if not cfg.base_url:
            problems.append("an openai miner needs base_url")
        elif not cfg.base_url.startswith(("http://", "https://")):
            problems.append(f"base_url must start with http:// or https://, got {cfg.base_url!r}")
        if not cfg.model:
            problems.append("an openai miner needs model")
        return problems

    @classmethod
    def from_config(cls, cfg: MinerConfig) -> OpenAIBackend:
        return cls(name=cfg.name, model=cfg.model, base_url=cfg.base_url or "", api_key_env=cfg.api_key_env,
                   max_concurrency=cfg.max_concurrency, requests_per_second=cfg.requests_per_second,
                   max_retries=cfg.max_retries, timeout_s=cfg.timeout_s)

    def __init__(self, *, name: str, model: str, base_url: str, api_key_env: str | None = None,
                 max_concurrency: int = 8, requests_per_second: float | None = None, max_retries: int = 5,
                 timeout_s: float = 60.0, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 retry_after_max_s: float = 60.0, seed: int = 0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.seed = seed

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r})"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """Answer all requests concurrently (at most max_concurrency in flight), in order."""
        if not requests:
            return []
        headers = {"Content-Type": "application/json"}
        key = ""
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise LLMError(f"{self.name}: environment variable {self.api_key_env} (API key for "
                               f"{self.endpoint}) is not set")
            headers["Authorization"] = f"Bearer {key}"
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            outcomes = asyncio.run(self._run(requests, headers))
        else:  # called from inside an event loop (e.g. a notebook): run ours in a worker thread
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                outcomes = pool.submit(asyncio.run, self._run(requests, headers)).result()
        # an endpoint could echo the request headers in an error body: never let the key through
        errors = {i: _redact(o, key) for i, o in enumerate(outcomes) if isinstance(o, str)}
        if errors:
            first = next(iter(errors.values()))
            raise LLMError(
                f"{self.name} ({self.model} at {self.endpoint}): {len(errors)} of {len(requests)} requests "
                f"failed; first: {first}",
                partial=[None if isinstance(o, str) else o for o in outcomes], errors=errors,
            )
        return outcomes  # type: ignore[return-value]

    async def _run(self, requests: list[ChatRequest], headers: dict[str, str]) -> list[Completion | str]:
        # A fixed pool of workers, each with its own single-connection client: bounded concurrency without
        # one shared httpcore pool, whose request assignment costs grow with connections x waiting requests.
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(requests)):
            queue.put_nowait(i)
        outcomes: list[Completion | str] = ["not attempted"] * len(requests)
        pacer = _Pacer(self.requests_per_second)

        async def worker() -> None:
            transport = httpx.AsyncHTTPTransport(
                verify=_ssl_context(), limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])  # no Nagle stalls on small bodies
            async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), transport=transport,
                                         headers=headers) as client:
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    outcomes[i] = await self._one(client, pacer, i, requests[i])

        await asyncio.gather(*(worker() for _ in range(min(self.max_concurrency, len(requests)))))
        return outcomes

    async def _one(self, client: httpx.AsyncClient, pacer: _Pacer, index: int,
                   request: ChatRequest) -> Completion | str:
        payload = self.payload(request)
        rng = random.Random(f"{self.seed}:{request.seed}:{index}")
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            await pacer.wait()
            try:
                return await self._post(client, payload, request)
            except _RetryableError as exc:
                last, retry_after = str(exc), exc.retry_after
            except httpx.TimeoutException:
                last = f"timeout after {self.timeout_s:g} s"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__})"
            except _FatalError as exc:
                return f"{self.endpoint}: {exc}"
            if attempt == self.max_retries:
                break
            delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * (0.5 + rng.random() / 2)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry_after_max_s))
            logger.warning("%s: %s (attempt %d of %d), retrying in %.2f s", self.endpoint, last, attempt + 1,
                           self.max_retries + 1, delay)
            # the worker keeps its slot while backing off: a struggling endpoint gets less load, not more
            await asyncio.sleep(delay)
        # each request's error names the endpoint: it lands alone in failure tables and asset metadata
        return f"{self.endpoint}: {last} (gave up after {self.max_retries + 1} attempts)"

    def payload(self, request: ChatRequest) -> dict:
        """The JSON body sent for a request."""
        body: dict = {"model": self.model, "messages": request.messages, "max_tokens": request.max_tokens,
                      "temperature": request.temperature, "seed": request.seed}
        if request.stop:
            body["stop"] = list(request.stop)
        if request.choices:
            answer = {"type": "string", "enum": list(request.choices)}
            body["response_format"] = _json_schema_format(
                "choice", {"type": "object", "properties": {"answer": answer}, "required": ["answer"],
                           "additionalProperties": False})
            body["logprobs"] = True
        elif request.json_schema is not None:
            body["response_format"] = _json_schema_format("answer", request.json_schema)
        else:  # free text (one phrase): token log-probabilities give the confidence
            body["logprobs"] = True
        return body

    async def _post(self, client: httpx.AsyncClient, payload: dict, request: ChatRequest) -> Completion:
        response = await client.post(self.endpoint, json=payload)
        if response.status_code in _RETRY_STATUS or response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code}", _parse_retry_after(response))
        if response.status_code >= 400:
            # redact before cutting the excerpt: a key cut in half by the excerpt would no longer match
            body = _redact(response.text, _bearer_token(response.request.headers.get("authorization", "")))
            raise _FatalError(f"HTTP {response.status_code}: {_excerpt(body)}")
        try:
            body = response.json()
            message = body["choices"][0]["message"]
            text = message.get("content") or ""
            usage = body.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", 0))
            completion_tokens = int(usage.get("completion_tokens", 0))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _RetryableError(f"malformed response body ({type(exc).__name__})") from None
        if not isinstance(text, str):
            raise _RetryableError("malformed response body (content is not text)")
        mean_logprob = _mean_logprob(body["choices"][0].get("logprobs"))
        if request.choices:
            try:
                text = json.loads(text)["answer"]
            except (ValueError, KeyError, TypeError):
                raise _RetryableError("answer does not match the choice schema") from None
            if text not in request.choices:
                raise _RetryableError(f"answer {str(text)[:20]!r} is not one of the allowed choices")
        return Completion(text=text, mean_logprob=mean_logprob, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens)


class _FatalError(Exception):
    pass


class _Pacer:
    """Spaces request starts at least 1/rate seconds apart (a simple rate limit per endpoint)."""

    def __init__(self, requests_per_second: float | None) -> None:
        self.interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process (loading the CA bundle costs ~50 ms per client otherwise)."""
    return ssl.create_default_context()


def _json_schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _parse_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _mean_logprob(logprobs: object) -> float | None:
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list) or not content:
        return None
    values = [t.get("logprob") for t in content if isinstance(t, dict)]
    values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _redact(text: str, secret: str) -> str:
    """``text`` with every copy of ``secret`` (as sent, or JSON-escaped as an echoing body writes it) removed."""
    if not secret:
        return text
    for form in dict.fromkeys([secret, json.dumps(secret)[1:-1]]):
        text = text.replace(form, "[redacted]")
    return text


def _excerpt(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]

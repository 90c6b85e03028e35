"""A real HTTP server on loopback speaking the OpenAI chat-completions protocol, with fault injection.

Answers are derived deterministically from the request (the item title inside the <item> block), so a run
with faults can be compared with a fault-free run. Faults are scripted per marker: the first requests whose
item text contains the marker get the listed faults in order, later ones succeed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

INJECTION_MARKER = "ignore previous instructions"
#: an item whose title holds this is answered with the prompt's first few-shot answer, as small models often do
COPY_MARKER = "parrot"
FAULTS = ("429", "500", "503", "400", "timeout", "malformed", "truncated", "bad_content", "no_choices")

_TITLE = re.compile(r"Title: (.*)")


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def item_title(messages: list[dict]) -> str:
    """Title of the item being asked about: the last "Title:" line in the user messages."""
    titles = [m for msg in messages if msg.get("role") == "user" for m in _TITLE.findall(_text(msg.get("content")))]
    return titles[-1].strip() if titles else ""


def _item_block(messages: list[dict]) -> str:
    blocks = [b for msg in messages if msg.get("role") == "user"
              for b in re.findall(r"<item>(.*?)</item>", _text(msg.get("content")), re.DOTALL)]
    return blocks[-1] if blocks else ""


def _field(messages: list[dict], label: str) -> str:
    found = re.findall(rf"^{label}: (.*)$", _item_block(messages), re.MULTILINE)
    return found[-1].strip() if found else ""


def _need(messages: list[dict]) -> str:
    """A phrase about the item (its category leaf and two description words) that shares no content word with
    its title: the miner rejects answers that restate the title, as a real model's should be."""
    from mining.parsing import content_words

    title = item_title(messages)
    tag = hashlib.sha256(title.encode()).hexdigest()[:6]
    in_title = set(content_words(title))
    leaf = [w for w in content_words(_field(messages, "Categories").split(">")[-1]) if w not in in_title]
    words = [w for w in content_words(_field(messages, "Description")) if w not in in_title][:2]
    return " ".join(leaf[:2] + ["work:"] + (" and ".join(words) or "need").split() + [f"tag{tag}"])


def expected_phrase(messages: list[dict]) -> str:
    """The phrase the server answers for a free-text request (tests compare against it)."""
    answers = [_text(m.get("content")) for m in messages if m.get("role") == "assistant"]
    if COPY_MARKER in item_title(messages).lower() and answers:
        return answers[0]
    variant = hashlib.sha256("|".join(answers).encode()).hexdigest()[:4]
    return f"{_need(messages)} for project {variant}"


def expected_descriptors(messages: list[dict], n: int) -> list[dict]:
    """The descriptors the server answers for a structured request."""
    need = _need(messages)
    return [{"descriptor": f"{need} motive {k}", "confidence": round(0.9 - 0.2 * k, 2)} for k in range(n)]


class FakeOpenAIServer:
    """Threaded loopback server; use as a context manager. ``base_url`` ends in /v1."""

    def __init__(self, *, latency_s: float = 0.0, hang_s: float = 1.0, faults: dict[str, list[str]] | None = None,
                 retry_after: str = "0", record: bool = True) -> None:
        self.latency_s = latency_s
        self.record = record  # off for long benchmarks: every request body would stay in memory
        self.hang_s = hang_s
        self.retry_after = retry_after
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        for plan in self.faults.values():
            unknown = [f for f in plan if f not in FAULTS]
            if unknown:
                raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self.requests: list[dict] = []
        self.faults_served: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: avoid delayed-ACK stalls

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                owner._handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self, messages: list[dict]) -> str | None:
        block = _item_block(messages) or _text(messages[-1].get("content")) if messages else ""
        with self._lock:
            for marker, plan in self.faults.items():
                if marker in block and plan:
                    fault = plan.pop(0)
                    self.faults_served.append(fault)
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            length = int(handler.headers.get("Content-Length", "0"))
            raw = handler.rfile.read(length)
            body = json.loads(raw)
            if self.record:
                with self._lock:
                    self.requests.append({"path": handler.path, "headers": dict(handler.headers.items()),
                                          "body": body})
            if self.latency_s:
                time.sleep(self.latency_s)
            if handler.path != "/v1/chat/completions":
                self._send(handler, 404, b'{"error": "not found"}')
                return
            fault = self._next_fault(body.get("messages", []))
            if fault in ("429", "500", "503", "400"):
                headers = {"Retry-After": self.retry_after} if fault == "429" else {}
                self._send(handler, int(fault), json.dumps({"error": {"message": f"injected {fault}"}}).encode(),
                           headers)
                return
            if fault == "timeout":
                time.sleep(self.hang_s)
            answer = json.dumps(self._answer(body, fault)).encode()
            if fault == "malformed":
                answer = b"<html>upstream error</html>"
            elif fault == "truncated":
                answer = answer[: len(answer) // 2]
            self._send(handler, 200, answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    def _answer(self, body: dict, fault: str | None) -> dict:
        messages = body.get("messages", [])
        response_format = body.get("response_format") or {}
        schema = (response_format.get("json_schema") or {}).get("schema")
        injected = INJECTION_MARKER in _item_block(messages).lower()
        if fault == "bad_content" or injected:
            # a gullible model that follows the injected instruction (or just writes junk)
            text = '{"hacked": true, "note": "instructions ignored"}'
        elif schema is not None and "answer" in schema.get("properties", {}):
            options = schema["properties"]["answer"]["enum"]
            pick = int(hashlib.sha256(item_title(messages).encode()).hexdigest(), 16) % len(options)
            text = json.dumps({"answer": options[pick]})
        elif schema is not None:
            n = schema["properties"]["descriptors"].get("maxItems", 3)
            text = "Here you go:\n```json\n" + json.dumps({"descriptors": expected_descriptors(messages, n)}) + "\n```"
        else:
            text = expected_phrase(messages) + "\nextra line the client must cut"
            if body.get("stop"):
                text = text.split(body["stop"][0])[0]
        choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if body.get("logprobs"):
            words = text.split()
            choice["logprobs"] = {"content": [{"token": w, "logprob": -0.05 * (1 + len(w) % 3)} for w in words]}
        prompt_chars = sum(len(_text(m.get("content"))) for m in messages)
        result = {"id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
                  "choices": [choice],
                  "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(text.split()),
                            "total_tokens": prompt_chars // 4 + len(text.split())}}
        if fault == "no_choices":
            result["choices"] = []
        return result


class FakeOpenAIServerProcess:
    """The same server in a child process (benchmarks: no GIL shared between client and server)."""

    def __init__(self, *, latency_s: float = 0.0, record: bool = True) -> None:
        self.latency_s = latency_s
        self.record = record
        self._process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> FakeOpenAIServerProcess:
        root = Path(__file__).resolve().parents[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_openai_server", "--latency-s", str(self.latency_s),
             *([] if self.record else ["--no-record"])],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            raise RuntimeError(f"fake server did not start: {self.base_url!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()  # the child exits when its stdin closes
        self._process.wait(timeout=10)


def _serve_until_stdin_closes() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server on loopback")
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--no-record", action="store_true", help="keep no request bodies (long benchmarks)")
    args = parser.parse_args()
    with FakeOpenAIServer(latency_s=args.latency_s, record=not args.no_record) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    _serve_until_stdin_closes()

"""The OpenAI-compatible backend against a real loopback HTTP server with injected faults."""

from __future__ import annotations

import logging
import time

import pytest

from mining.backends import ChatRequest, LLMError, MinerConfig, build_backend
from mining.openai_backend import OpenAIBackend
from mining.prompts import few_shot_phrase_messages, item_interests_schema, structured_json_messages
from tests.fake_openai_server import FakeOpenAIServer, expected_descriptors, expected_phrase

SECRET = "sk-test-SECRET-value-0123456789"
KEY_ENV = "DIGR_TEST_OPENAI_KEY"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def _backend(server: FakeOpenAIServer, **overrides: object) -> OpenAIBackend:
    params: dict = {"name": "fake", "model": "fake-model", "base_url": server.base_url, "api_key_env": KEY_ENV,
                    "max_concurrency": 4, "max_retries": 3, "timeout_s": 2.0, "backoff_base_s": 0.01,
                    "backoff_max_s": 0.05}
    params.update(overrides)
    return OpenAIBackend(**params)


def _phrase_request(title: str) -> ChatRequest:
    return ChatRequest(messages=few_shot_phrase_messages({"title": title}, 0), stop=("\n",), max_tokens=24)


def _json_request(title: str, n: int = 2) -> ChatRequest:
    return ChatRequest(messages=structured_json_messages({"title": title}, n), json_schema=item_interests_schema(n),
                       max_tokens=200)


def test_answers_in_order_with_auth_header_and_logprobs() -> None:
    with FakeOpenAIServer() as server:
        requests = [_phrase_request(f"Item {i}") for i in range(6)]
        answers = _backend(server).complete_batch(requests)
    assert [a.text for a in answers] == [expected_phrase(r.messages) for r in requests]
    assert all(a.mean_logprob is not None and a.mean_logprob < 0 for a in answers)
    assert all(a.prompt_tokens > 0 and a.completion_tokens > 0 for a in answers)
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert all(r["path"] == "/v1/chat/completions" and r["body"]["model"] == "fake-model" for r in server.requests)
    assert all(r["body"]["stop"] == ["\n"] and r["body"]["logprobs"] is True for r in server.requests)


def test_json_schema_becomes_response_format_and_images_are_content_parts() -> None:
    messages = structured_json_messages({"title": "Microscope"}, 2, image_url="http://img/1.jpg")
    with FakeOpenAIServer() as server:
        [answer] = _backend(server).complete_batch([ChatRequest(messages=messages,
                                                                json_schema=item_interests_schema(2))])
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == item_interests_schema(2)
    parts = body["messages"][1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "http://img/1.jpg"}}
    assert expected_descriptors(messages, 2)[0]["descriptor"] in answer.text


def test_choices_are_constrained_and_validated() -> None:
    with FakeOpenAIServer() as server:
        answers = _backend(server).complete_batch(
            [ChatRequest(messages=[{"role": "user", "content": f"<item>\nTitle: t{i}\n</item>"}], choices=("0", "1"))
             for i in range(8)])
    assert {a.text for a in answers} <= {"0", "1"} and len({a.text for a in answers}) == 2
    assert server.requests[0]["body"]["response_format"]["json_schema"]["schema"]["properties"]["answer"]["enum"] \
        == ["0", "1"]


@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout", "malformed", "truncated", "no_choices"])
def test_transient_faults_are_retried_and_results_match_a_fault_free_run(fault: str) -> None:
    requests = [_json_request("Beaker A"), _json_request("Beaker B"), _phrase_request("Beaker C")]
    with FakeOpenAIServer() as clean_server:
        clean = _backend(clean_server).complete_batch(requests)
    with FakeOpenAIServer(faults={"Beaker B": [fault, fault], "Beaker C": [fault]}, hang_s=1.0) as server:
        faulty = _backend(server, timeout_s=0.4).complete_batch(requests)
    assert faulty == clean
    assert server.faults_served == [fault] * 3
    assert len(server.requests) == 3 + 3


def test_retry_after_is_honoured() -> None:
    with FakeOpenAIServer(faults={"Slow": ["429"]}, retry_after="0.6") as server:
        started = time.monotonic()
        [answer] = _backend(server).complete_batch([_phrase_request("Slow")])
        elapsed = time.monotonic() - started
    assert elapsed >= 0.6
    assert answer.text == expected_phrase(_phrase_request("Slow").messages)


def test_exhausted_retries_raise_llm_error_with_partial_results_and_no_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(faults={"Doomed": ["500"] * 10}) as server:
        backend = _backend(server, max_retries=2)
        with pytest.raises(LLMError) as info:
            backend.complete_batch([_phrase_request("Fine"), _phrase_request("Doomed")])
    error = info.value
    assert "fake-model" in str(error) and server.base_url in str(error) and "HTTP 500" in str(error)
    assert error.partial is not None and error.partial[0] is not None and error.partial[1] is None
    assert list(error.errors) == [1] and "3 attempts" in error.errors[1]
    assert len(server.requests) == 1 + 3
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in repr(backend)
    assert SECRET not in caplog.text and "retrying" in caplog.text


def test_client_errors_are_not_retried() -> None:
    with FakeOpenAIServer(faults={"Bad": ["400", "400"]}) as server:
        with pytest.raises(LLMError, match="HTTP 400"):
            _backend(server).complete_batch([_phrase_request("Bad")])
    assert len(server.requests) == 1


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with FakeOpenAIServer() as server:
        with pytest.raises(LLMError, match=KEY_ENV):
            _backend(server).complete_batch([_phrase_request("x")])
    assert server.requests == []


def test_unreachable_endpoint_is_an_llm_error() -> None:
    with FakeOpenAIServer() as server:
        url = server.base_url
    with pytest.raises(LLMError, match="connection error"):
        OpenAIBackend(name="x", model="m", base_url=url, max_retries=1, backoff_base_s=0.01).complete_batch(
            [_phrase_request("x")])


def test_concurrency_bound_is_respected() -> None:
    with FakeOpenAIServer(latency_s=0.05) as server:
        _backend(server, max_concurrency=3).complete_batch([_phrase_request(f"c{i}") for i in range(24)])
    assert server.max_in_flight == 3


def test_rate_limit_spaces_requests() -> None:
    with FakeOpenAIServer() as server:
        started = time.monotonic()
        _backend(server, max_concurrency=8, requests_per_second=20).complete_batch(
            [_phrase_request(f"r{i}") for i in range(8)])
        elapsed = time.monotonic() - started
    assert elapsed >= 7 / 20 * 0.95


def test_build_backend_from_config() -> None:
    with FakeOpenAIServer() as server:
        cfg = MinerConfig(name="remote", backend="openai", model="fake-model", base_url=server.base_url,
                          api_key_env=KEY_ENV, prompt_style="structured_json", n_descriptors=2)
        backend = build_backend(cfg)
        [answer] = backend.complete_batch([_json_request("Pipette")])
    assert isinstance(backend, OpenAIBackend) and backend.kind == "openai"
    assert backend.name == "remote" and backend.model == "fake-model"
    expected = expected_descriptors(_json_request("Pipette").messages, 2)[1]["descriptor"]
    assert f'"{expected}"' in answer.text and expected.endswith("motive 1") and "pipette" not in expected


@pytest.mark.parametrize("overrides, fragment", [
    ({"backend": "openai", "base_url": None}, "base_url"),
    ({"backend": "transformers", "model_path": None}, "model_path"),
    ({"backend": "openai", "base_url": "http://x", "n_descriptors": 0}, "n_descriptors"),
    ({"backend": "grpc", "base_url": "http://x"}, "backend"),
    ({"backend": "openai", "base_url": "ftp://x"}, "http:// or https://"),
    ({"backend": "openai", "base_url": "http://x", "model": None}, "an openai miner needs model"),
])
def test_invalid_miner_config_is_rejected(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        MinerConfig(**{"name": "m", "model": "x", **overrides})


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenAIBackend(name="x", model="m", base_url="ftp://host")


def test_every_transport_setting_reaches_the_backend() -> None:
    cfg = MinerConfig(name="remote", backend="openai", model="m", base_url="https://llm.example.org/v1/",
                      api_key_env=KEY_ENV, max_concurrency=3, requests_per_second=2.5, max_retries=1, timeout_s=4.0)
    backend = build_backend(cfg)
    assert (backend.base_url, backend.api_key_env, backend.max_concurrency, backend.requests_per_second,
            backend.max_retries, backend.timeout_s) == ("https://llm.example.org/v1", KEY_ENV, 3, 2.5, 1, 4.0)

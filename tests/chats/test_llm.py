"""The provider call layer, driven through the real SDK against the fake Anthropic server."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chatdesk.exceptions import ProviderNotConfigured, ProviderPermanentError, ProviderTransientError
from chats.llm import (
    STOP_INTERRUPTED,
    ModelReply,
    ProviderConfig,
    call_with_retries,
    parse_retry_after,
    provider_client,
    retry_delay,
    stream_reply,
)
from tests.support.fake_anthropic import FakeAnthropic, error, reply, text, tool_use

SECRET = "sk-ant-api03-SECRETSECRETSECRET-abcdef"
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def provider(fake: FakeAnthropic) -> ProviderConfig:
    return ProviderConfig(api_key=SECRET, base_url=fake.base_url)


def call(provider: ProviderConfig, **overrides: Any) -> ModelReply:
    kwargs: dict[str, Any] = {
        "provider": provider,
        "model": "claude-sonnet-5-5",
        "system": "You are helpful.",
        "messages": MESSAGES,
        "tools": [],
        "betas": [],
        "max_tokens": 256,
    }
    kwargs.update(overrides)
    return stream_reply(**kwargs)


def test_text_reply_streams_deltas_in_order(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(reply(text("Hello there, friend"), chunk_size=5))
    deltas: list[tuple[int, str]] = []

    result = call(provider, on_text_delta=lambda index, chunk: deltas.append((index, chunk)))

    assert [d[1] for d in deltas] == ["Hello", " ther", "e, fr", "iend"]
    assert {d[0] for d in deltas} == {0}
    assert result.content == [{"type": "text", "text": "Hello there, friend"}]
    assert result.text == "Hello there, friend"
    assert result.stop_reason == "end_turn"


def test_request_is_sent_as_given(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(reply(text("ok")))
    tools = [{"name": "wait_agent", "description": "Wait.", "input_schema": {"type": "object"}}]
    system = [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}]

    call(provider, system=system, tools=tools, max_tokens=99)

    sent = fake.requests[0]
    assert sent.json["model"] == "claude-sonnet-5-5"
    assert sent.json["system"] == system
    assert sent.json["tools"] == tools
    assert sent.json["messages"] == MESSAGES
    assert sent.json["max_tokens"] == 99
    assert sent.json["stream"] is True
    assert sent.betas == []


def test_betas_go_through_the_beta_client(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(reply(text("ok")))

    call(provider, betas=["computer-use-2025-11-24"])

    assert fake.requests[0].betas == ["computer-use-2025-11-24"]


def test_tool_use_input_and_usage(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(
        reply(
            text("Clicking."),
            tool_use("computer", {"action": "left_click", "coordinate": [5, 6]}, id="toolu_9"),
            chunk_size=3,
            usage={
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_creation_input_tokens": 7,
                "cache_read_input_tokens": 80,
            },
        )
    )
    json_deltas: list[tuple[int, str]] = []

    result = call(provider, on_tool_input_delta=lambda index, chunk: json_deltas.append((index, chunk)))

    assert result.stop_reason == "tool_use"
    assert result.content[1:] == [
        {
            "type": "tool_use",
            "id": "toolu_9",
            "name": "computer",
            "input": {"action": "left_click", "coordinate": [5, 6]},
        }
    ]
    assert {index for index, _ in json_deltas} == {1}
    assert "".join(chunk for _, chunk in json_deltas) == '{"action": "left_click", "coordinate": [5, 6]}'
    assert result.usage == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 80,
    }


def test_toolset_member_keeps_its_toolset_name(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(
        reply(tool_use("zoom", {"region": [0, 0, 10, 10]}, id="toolu_z", toolset_name="computer"))
    )

    result = call(provider, tools=[{"type": "computer_toolset_20260801"}])

    assert result.content == [
        {
            "type": "tool_use",
            "id": "toolu_z",
            "name": "zoom",
            "input": {"region": [0, 0, 10, 10]},
            "toolset_name": "computer",
        }
    ]


def test_interrupt_mid_stream_keeps_partial_text(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(
        reply(
            text("one two three four five six"), tool_use("computer", {"action": "screenshot"}), chunk_size=4
        )
    )
    deltas: list[str] = []

    result = call(
        provider,
        on_text_delta=lambda _index, chunk: deltas.append(chunk),
        should_stop=lambda: len(deltas) >= 2,
    )

    assert result.stop_reason == STOP_INTERRUPTED
    assert result.content == [{"type": "text", "text": "one two "}]


def test_an_interrupt_ends_a_stream_whose_provider_went_silent(
    fake: FakeAnthropic, provider: ProviderConfig
) -> None:
    """No event arrives (the provider hangs): the interrupt is still seen within the poll interval."""
    fake.add_response(reply(text("first then silence for a long while"), chunk_size=6, chunk_delay=30))
    deltas: list[str] = []
    interrupted_at: list[float] = []

    def should_stop() -> bool:
        if not interrupted_at:
            interrupted_at.append(time.monotonic() + 1.0)  # a person presses "interrupt" a second in
        return time.monotonic() >= interrupted_at[0]

    started = time.monotonic()
    result = call(provider, should_stop=should_stop, on_text_delta=lambda _i, chunk: deltas.append(chunk))
    elapsed = time.monotonic() - started

    assert result.stop_reason == STOP_INTERRUPTED
    assert result.content == []  # nothing was said before the provider went silent
    assert elapsed < 10, f"the stream ran on for {elapsed:.1f}s after the interrupt"


def test_interrupt_before_any_text_gives_an_empty_reply(
    fake: FakeAnthropic, provider: ProviderConfig
) -> None:
    fake.add_response(reply(text("never seen")))

    result = call(provider, should_stop=lambda: True)

    assert result.stop_reason == STOP_INTERRUPTED
    assert result.content == []


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "rate_limit_error", "rate limiting"),
        (500, "api_error", "temporary error"),
        (502, "api_error", "temporary error"),
        (503, "api_error", "temporary error"),
        (529, "overloaded_error", "overloaded"),
    ],
)
def test_transient_errors(
    fake: FakeAnthropic, provider: ProviderConfig, status: int, error_type: str, expected: str
) -> None:
    fake.add_response(error(status=status, type=error_type, message=f"leak {SECRET}"))

    with pytest.raises(ProviderTransientError) as caught:
        call(provider)

    assert expected in caught.value.message
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (401, "authentication_error", "The model provider rejected the API key."),
        (403, "permission_error", "The API key is not allowed to use this model or feature."),
        (404, "not_found_error", 'The model provider does not know the model "claude-sonnet-5-5".'),
        (413, "request_too_large", "The request is too large for the model provider."),
    ],
)
def test_permanent_errors(
    fake: FakeAnthropic, provider: ProviderConfig, status: int, error_type: str, expected: str
) -> None:
    fake.add_response(error(status=status, type=error_type, message=f"invalid x-api-key {SECRET}"))

    with pytest.raises(ProviderPermanentError) as caught:
        call(provider)

    assert caught.value.message == expected
    assert SECRET not in str(caught.value)


def test_bad_request_gives_a_short_safe_reason(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    message = (
        f"messages.0: tool_result block must follow tool_use (key {SECRET} and sk-ant-other-key) " + "x" * 500
    )
    fake.add_response(error(status=400, type="invalid_request_error", message=message))

    with pytest.raises(ProviderPermanentError) as caught:
        call(provider)

    text_ = caught.value.message
    assert text_.startswith(
        "The model provider rejected the request: messages.0: tool_result block must follow"
    )
    assert SECRET not in text_
    assert "sk-ant-other-key" not in text_
    assert "[redacted]" in text_
    assert len(text_) < 300


def test_retry_after_seconds_is_parsed(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(error(status=429, headers={"retry-after": "12"}))

    with pytest.raises(ProviderTransientError) as caught:
        call(provider)

    assert caught.value.retry_after == 12


def test_retry_after_http_date_is_parsed(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake.add_response(error(status=529, headers={"retry-after": when}))

    with pytest.raises(ProviderTransientError) as caught:
        call(provider)

    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 31


def test_in_stream_overload_is_transient(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(reply(text("partial"), then_error=error(529, "overloaded_error")))

    with pytest.raises(ProviderTransientError, match="overloaded"):
        call(provider)


def test_in_stream_invalid_request_is_permanent(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(error(400, "invalid_request_error", "bad", in_stream=True))

    with pytest.raises(ProviderPermanentError, match="rejected the request: bad"):
        call(provider)


def test_connection_refused_is_transient() -> None:
    with FakeAnthropic() as server:
        url = server.base_url  # a port nobody listens on once the server stops
    provider = ProviderConfig(api_key=SECRET, base_url=url)

    with pytest.raises(ProviderTransientError, match="Could not connect") as caught:
        call(provider)

    assert SECRET not in str(caught.value)


def test_timeout_is_transient(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.add_response(reply(text("slow"), chunk_delay=1.0))

    with pytest.raises(ProviderTransientError, match="did not answer in time"):
        call(provider, timeout=0.2)


def test_missing_key_is_not_configured() -> None:
    with pytest.raises(ProviderNotConfigured):
        call(ProviderConfig(api_key=""))


def test_key_never_in_config_repr() -> None:
    config = ProviderConfig(api_key=SECRET, base_url="https://example.test")

    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert "https://example.test" in repr(config)


def test_retries_honour_retry_after_then_succeed(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.script(
        [
            error(429, headers={"retry-after": "3"}),
            error(529, headers={"retry-after": "120"}),
            reply(text("finally")),
        ]
    )
    slept: list[float] = []
    retries: list[int] = []

    result = call_with_retries(
        lambda: call(provider),
        attempts=4,
        base_delay=1,
        max_delay=30,
        sleep=slept.append,
        on_retry=lambda attempt, _delay, _exc: retries.append(attempt),
    )

    assert result.text == "finally"
    assert slept == [3, 30]  # the provider's hint, capped at max_delay
    assert retries == [1, 2]
    assert len(fake.requests) == 3


def test_retries_give_up_with_the_last_transient_error(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.script([error(500), error(500), error(529)])
    slept: list[float] = []

    with pytest.raises(ProviderTransientError, match="overloaded"):
        call_with_retries(lambda: call(provider), attempts=3, base_delay=1, max_delay=10, sleep=slept.append)

    assert len(slept) == 2
    assert 0.5 <= slept[0] <= 1
    assert 1 <= slept[1] <= 2
    assert len(fake.requests) == 3


def test_permanent_errors_are_not_retried(fake: FakeAnthropic, provider: ProviderConfig) -> None:
    fake.script([error(401), reply(text("never"))])
    slept: list[float] = []

    with pytest.raises(ProviderPermanentError):
        call_with_retries(lambda: call(provider), attempts=5, base_delay=1, max_delay=10, sleep=slept.append)

    assert slept == []
    assert len(fake.requests) == 1


def test_backoff_is_exponential_capped_and_jittered() -> None:
    delays = [retry_delay(attempt, None, base_delay=2, max_delay=10) for attempt in range(1, 6)]

    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(10, 2 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert retry_delay(1, 0, base_delay=2, max_delay=10) == 0
    assert retry_delay(1, 500, base_delay=2, max_delay=10) == 10


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "5"}, 5.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_one_client_per_process_reuses_its_connection_across_calls(
    fake: FakeAnthropic, provider: ProviderConfig
) -> None:
    fake.script([reply(text("one")), reply(text("two")), reply(text("three"))])

    replies = [call(provider).text for _ in range(3)]

    assert replies == ["one", "two", "three"]
    assert fake.connections == 1  # the steps of a turn share one keep-alive connection
    assert provider_client(provider) is provider_client(provider)
    other = ProviderConfig(api_key="sk-ant-other", base_url=fake.base_url)
    assert provider_client(other) is not provider_client(provider)  # one per account

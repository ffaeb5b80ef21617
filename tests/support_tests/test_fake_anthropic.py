"""The fake Anthropic server must look like the real API to the real SDK, or every test built on it lies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import TextBlock, ToolUseBlock
from anthropic.types.beta import BetaToolUnionParam

from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, error, reply, text, tool_use

MESSAGES: Any = [{"role": "user", "content": "Hello"}]


def block_text(block: object) -> str:
    """Return a text block's text; fail the test on any other kind of block."""
    assert isinstance(block, TextBlock), block
    return block.text


def tool_use_input(block: object) -> object:
    """Return a tool_use block's input; fail the test on any other kind of block."""
    assert isinstance(block, ToolUseBlock), block
    return block.input


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
    yield sdk
    sdk.close()


def test_non_streaming_reply_with_text_and_tool_use(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(
        reply(
            text("Let me look."),
            tool_use("get_weather", {"city": "Paris"}, id="toolu_1"),
            usage={"input_tokens": 42, "output_tokens": 7, "cache_read_input_tokens": 30},
        )
    )

    message = client.messages.create(model="claude-sonnet-5-5", max_tokens=100, messages=MESSAGES)

    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Let me look."
    assert message.content[1].type == "tool_use"
    assert (message.content[1].id, message.content[1].name) == ("toolu_1", "get_weather")
    assert message.content[1].input == {"city": "Paris"}
    assert message.usage.input_tokens == 42
    assert message.usage.output_tokens == 7
    assert message.usage.cache_read_input_tokens == 30
    assert message.model == "claude-sonnet-5-5"


def test_streaming_accumulates_text_chunks_and_tool_input(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    tool_input = {"action": "left_click", "coordinate": [10, 20], "note": "a longer string to split"}
    fake.add_response(
        reply(
            text("Hello, streaming world"),
            tool_use("computer", tool_input, id="toolu_2"),
            chunk_size=4,
            usage={"input_tokens": 11, "output_tokens": 22, "cache_creation_input_tokens": 5},
        )
    )

    deltas: list[str] = []
    json_deltas: list[str] = []
    with client.messages.stream(model="claude-sonnet-5-5", max_tokens=100, messages=MESSAGES) as stream:
        for event in stream:
            if event.type == "text":
                deltas.append(event.text)
            elif event.type == "input_json":
                json_deltas.append(event.partial_json)
        message = stream.get_final_message()

    assert len(deltas) > 1, "text should arrive in several deltas"
    assert "".join(deltas) == "Hello, streaming world"
    assert len(json_deltas) > 1
    assert block_text(message.content[0]) == "Hello, streaming world"
    assert tool_use_input(message.content[1]) == tool_input
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 11
    assert message.usage.output_tokens == 22
    assert message.usage.cache_creation_input_tokens == 5
    assert fake.requests[0].streaming


def test_beta_stream_records_betas_tools_and_system(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(reply(tool_use("left_click", {"coordinate": [0, 0]}, toolset_name="computer")))
    tools: list[BetaToolUnionParam] = [
        {"type": "computer_20251124", "name": "computer", "display_width_px": 800, "display_height_px": 600}
    ]

    with client.beta.messages.stream(
        model="claude-opus-4-6",
        max_tokens=50,
        system=[{"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}}],
        messages=MESSAGES,
        tools=tools,
        betas=["computer-use-2025-11-24"],
    ) as stream:
        message = stream.get_final_message()

    request = fake.requests[0]
    assert request.method == "POST"
    assert request.path.startswith("/v1/messages")
    assert request.betas == ["computer-use-2025-11-24"]
    assert request.json["model"] == "claude-opus-4-6"
    assert request.json["tools"] == tools
    assert request.json["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert request.json["messages"] == MESSAGES
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.name == "left_click"
    assert block.input == {"coordinate": [0, 0]}
    assert block.toolset_name == "computer"


def test_list_of_blocks_is_shorthand_for_a_reply(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.script([[text("one")], [text("two")]])

    first = client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    second = client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert [block_text(first.content[0]), block_text(second.content[0])] == ["one", "two"]
    assert first.stop_reason == "end_turn"
    assert fake.pending == 0


@pytest.mark.parametrize(
    ("status", "error_type", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.InternalServerError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_errors_map_to_sdk_exceptions(
    fake: FakeAnthropic,
    client: anthropic.Anthropic,
    status: int,
    error_type: str,
    exception: type[anthropic.APIStatusError],
    streaming: bool,
) -> None:
    fake.add_response(error(status=status, type=error_type, message="details here"))

    with pytest.raises(exception) as caught:
        if streaming:
            with client.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
                stream.get_final_message()
        else:
            client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert caught.value.status_code == status
    assert caught.value.type == error_type
    assert caught.value.api_message == "details here"


def test_rate_limit_error_carries_retry_after(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(error(status=429, headers={"Retry-After": "7"}))

    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert caught.value.response.headers["retry-after"] == "7"


def test_sdk_sees_a_retryable_error_like_the_real_api(fake: FakeAnthropic) -> None:
    """A client that kept the SDK's own retries would send extra requests: the script would notice."""
    fake.script([error(status=500, headers={"retry-after-ms": "10"}), reply(text("ok"))])
    sdk = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=2)

    message = sdk.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert block_text(message.content[0]) == "ok"
    assert len(fake.requests) == 2


def test_in_stream_error_event_after_partial_output(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(reply(text("partial"), then_error=error(529, "overloaded_error")))

    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
            for event in stream:
                if event.type == "text":
                    seen.append(event.text)

    assert seen == ["partial"]
    assert caught.value.type == "overloaded_error"


def test_in_stream_error_without_content(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(error(529, in_stream=True))

    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
            stream.get_final_message()

    assert caught.value.type == "overloaded_error"


def test_exhausted_script_fails_loudly(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert "script exhausted" in str(caught.value.api_message)
    assert len(fake.unanswered) == 1


def test_callable_handler_reacts_to_the_request(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    def handler(request: RecordedRequest) -> Reply:
        results = request.tool_results()
        if not results:
            return reply(tool_use("computer", {"action": "screenshot"}, id="toolu_s"))
        return reply(text(f"saw {results[0]['tool_use_id']}"))

    fake.handle_with(handler)

    first = client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    followup = [
        *MESSAGES,
        {"role": "assistant", "content": [block.to_dict() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_s", "content": "ok"}]},
    ]
    second = client.messages.create(model="m", max_tokens=5, messages=followup)

    assert first.stop_reason == "tool_use"
    assert block_text(second.content[0]) == "saw toolu_s"


def test_queued_callable_is_used_once(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.script([lambda request: reply(text(request.json["model"])), reply(text("static"))])

    first = client.messages.create(model="dynamic-model", max_tokens=5, messages=MESSAGES)
    second = client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert block_text(first.content[0]) == "dynamic-model"
    assert block_text(second.content[0]) == "static"


def test_chunk_delay_lets_a_test_observe_a_stream_in_progress(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.add_response(reply(text("abcdefgh"), chunk_size=2, chunk_delay=0.05))
    first_delta = threading.Event()
    done = threading.Event()

    def consume() -> None:
        with client.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
            for event in stream:
                if event.type == "text":
                    first_delta.set()
        done.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert first_delta.wait(5)
    assert not done.is_set(), "the stream should still be in progress after the first delta"
    worker.join(5)
    assert done.is_set()


def test_wait_for_requests_waits_on_a_condition(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(reply(text("late")))
    worker = threading.Thread(
        target=lambda: client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    )
    worker.start()

    requests = fake.wait_for_requests(1, timeout=5)
    worker.join(5)

    assert requests[0].json["model"] == "m"
    with pytest.raises(AssertionError, match="expected 2 request"):
        fake.wait_for_requests(2, timeout=0.1)


def test_concurrent_requests_each_get_one_response(fake: FakeAnthropic) -> None:
    fake.script([reply(text(str(i))) for i in range(8)])
    answers: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        sdk = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
        message = sdk.messages.create(model="m", max_tokens=5, messages=MESSAGES)
        with lock:
            answers.append(block_text(message.content[0]))

    workers = [threading.Thread(target=call) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)

    assert sorted(answers, key=int) == [str(i) for i in range(8)]
    assert len(fake.requests) == 8


def test_count_tokens(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    result = client.messages.count_tokens(model="m", messages=MESSAGES)

    assert result.input_tokens >= 1
    assert fake.requests[0].path.startswith("/v1/messages/count_tokens")


def test_a_failing_handler_answers_500_and_is_recorded(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    def handler(request: RecordedRequest) -> Reply:
        raise KeyError("oops")

    fake.add_response(handler)

    with pytest.raises(anthropic.InternalServerError, match="handler raised KeyError"):
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert len(fake.handler_errors) == 1

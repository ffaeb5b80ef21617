"""The fake Anthropic server must look like the real API to the real SDK, or every test built on it lies."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import TextBlock, ToolUseBlock
from anthropic.types.beta import BetaToolUnionParam

from tests.support.fake_anthropic import (
    FakeAnthropic,
    PromptCache,
    RecordedRequest,
    Reply,
    RequestRejected,
    error,
    png_bytes,
    reply,
    text,
    tool_use,
)

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


# --- usage and the prompt cache, against hand-computed cases -------------------------------------------
# Text is ~4 characters a token (rounded up), an image width x height / 750 (rounded up); the fake's
# minimum cacheable prefix is 1,024 tokens for every model; a lookup checks each breakpoint and up to 20
# blocks before it.

CC = {"type": "ephemeral"}


def words(tokens: int) -> str:
    """Return a text of exactly ``tokens`` tokens for the fake (4 characters each)."""
    return "abcd" * tokens


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def text_block(tokens: int, *, cached: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": words(tokens)}
    if cached:
        block["cache_control"] = CC
    return block


def usage_of(cache: PromptCache, system: Any, messages: list[dict[str, Any]], **extra: Any) -> dict[str, int]:
    return cache.usage({"model": "m", "system": system, "messages": messages, **extra})


def test_usage_is_computed_from_the_request(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(reply(text("Hello there!")))  # 12 characters: 3 output tokens

    message = client.messages.create(
        model="m", max_tokens=5, system="abcd" * 10, messages=[{"role": "user", "content": "abcdefgh"}]
    )

    assert message.usage.input_tokens == 10 + 2
    assert message.usage.output_tokens == 3
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)
    assert fake.requests[0].usage is not None and fake.requests[0].usage["input_tokens"] == 12


def test_a_cached_prefix_is_written_then_read(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.script([reply(text("one")), reply(text("two"))])
    system: Any = [{"type": "text", "text": words(1100), "cache_control": CC}]

    first = client.messages.create(model="m", max_tokens=5, system=system, messages=MESSAGES)
    second = client.messages.create(model="m", max_tokens=5, system=system, messages=MESSAGES)

    # "Hello" is 2 tokens, after the breakpoint: never cached.
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (1100, 0)
    assert first.usage.input_tokens == 2
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, 1100)
    assert second.usage.input_tokens == 2


def test_a_growing_conversation_reads_the_previous_prefix_and_writes_the_new_part() -> None:
    cache = PromptCache()
    system = [{"type": "text", "text": words(1000), "cache_control": CC}]  # under 1,024: not cached alone
    first = [user(text_block(100, cached=True))]
    second = [
        user(text_block(100)),
        {"role": "assistant", "content": [text_block(50)]},
        user(text_block(30, cached=True)),
    ]

    assert usage_of(cache, system, first) == {
        "input_tokens": 0,
        "cache_creation_input_tokens": 1100,
        "cache_read_input_tokens": 0,
    }
    # The new breakpoint's prefix is not cached; 2 blocks back, the first request's is: 1,100 read.
    assert usage_of(cache, system, second) == {
        "input_tokens": 0,
        "cache_creation_input_tokens": 80,
        "cache_read_input_tokens": 1100,
    }


@pytest.mark.parametrize(("blocks_between", "read"), [(19, 1100), (20, 0)])
def test_a_lookup_looks_back_at_most_20_blocks(blocks_between: int, read: int) -> None:
    cache = PromptCache()
    system = [{"type": "text", "text": words(1000)}]
    usage_of(cache, system, [user(text_block(100, cached=True))])  # writes the prefix ending at block 1
    # Block 1 again, then ``blocks_between`` one-token blocks, then the breakpoint: the breakpoint is
    # blocks_between + 1 blocks after block 1.
    later = user(text_block(100), *(text_block(1) for _ in range(blocks_between)), text_block(1, cached=True))

    usage = usage_of(cache, system, [later])

    total = 1000 + 100 + blocks_between + 1
    assert usage["cache_read_input_tokens"] == read
    assert usage["cache_creation_input_tokens"] == total - read
    assert usage["input_tokens"] == 0


@pytest.mark.parametrize(("tokens", "cached"), [(1023, False), (1024, True)])
def test_a_prefix_under_the_minimum_is_not_cached(tokens: int, cached: bool) -> None:
    cache = PromptCache()
    system = [{"type": "text", "text": words(tokens), "cache_control": CC}]

    first = usage_of(cache, system, [user(text_block(1))])
    second = usage_of(cache, system, [user(text_block(1))])

    assert first["cache_creation_input_tokens"] == (tokens if cached else 0)
    assert second["cache_read_input_tokens"] == (tokens if cached else 0)
    assert second["input_tokens"] == (1 if cached else tokens + 1)


def test_more_than_four_breakpoints_is_a_400(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(reply(text("never sent")))
    blocks: Any = [{"type": "text", "text": f"b{n}", "cache_control": CC} for n in range(5)]

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": blocks}])

    assert caught.value.api_message == "A maximum of 4 blocks with cache_control may be provided. Found 5."
    assert fake.pending == 1  # refused before a scripted answer was used


def test_breakpoints_inside_tool_results_count_and_images_are_counted_by_area() -> None:
    cache = PromptCache()
    image = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(png_bytes(1280, 800)).decode(),
        },
        "cache_control": CC,
    }
    result = {"type": "tool_result", "tool_use_id": "t", "content": [image]}
    use = {"type": "tool_use", "id": "t", "name": "abcd", "input": {}}  # "abcd" + "{}": 2 tokens

    usage = usage_of(
        cache, None, [user(text_block(10)), {"role": "assistant", "content": [use]}, user(result)]
    )

    assert usage["cache_creation_input_tokens"] == 10 + 2 + 1366  # 1280 x 800 / 750 = 1365.3
    with pytest.raises(RequestRejected):
        cache.blocks({"messages": [user(*(text_block(1, cached=True) for _ in range(4)), result)]})


def test_entries_expire_after_their_ttl() -> None:
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    system = [{"type": "text", "text": words(1100), "cache_control": CC}]
    usage_of(cache, system, [user(text_block(1))])
    now[0] = 299.0
    assert usage_of(cache, system, [user(text_block(1))])["cache_read_input_tokens"] == 1100  # refreshed
    now[0] = 299.0 + 301.0
    assert usage_of(cache, system, [user(text_block(1))])["cache_read_input_tokens"] == 0


def test_with_caching_off_every_input_token_is_uncached(client: anthropic.Anthropic) -> None:
    with FakeAnthropic(cache=False) as uncached:
        sdk = anthropic.Anthropic(api_key="test", base_url=uncached.base_url, max_retries=0)
        uncached.script([reply(text("a")), reply(text("b"))])
        system: Any = [{"type": "text", "text": words(1100), "cache_control": CC}]
        sdk.messages.create(model="m", max_tokens=5, system=system, messages=MESSAGES)
        second = sdk.messages.create(model="m", max_tokens=5, system=system, messages=MESSAGES)
        sdk.close()
    assert second.usage.input_tokens == 1102
    assert (second.usage.cache_read_input_tokens, second.usage.cache_creation_input_tokens) == (0, 0)


def test_a_client_reuses_its_connection(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.script([reply(text("a")), reply(text("b")), reply(text("c"))])

    for _ in range(3):
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    assert fake.connections == 1


def test_an_image_the_api_could_not_read_is_a_400(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.add_response(reply(text("never sent")))
    image: Any = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "bm90IGFuIGltYWdl"},
    }

    with pytest.raises(anthropic.BadRequestError, match="Could not process image"):
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": [image]}])

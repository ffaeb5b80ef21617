"""Streamed deltas -> ``message_part`` events, coalesced.

A model streams many tiny deltas; publishing each one would put hundreds of messages a second per chat
on Redis. Deltas are buffered per content block and flushed at most every ``interval`` seconds, except
the first one of a reply, which goes out at once so a viewer sees the answer start without delay.
Flushing happens on the streaming thread (on each delta and after each stream event, see
:meth:`PartPublisher.tick`), so no thread of its own is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chats.events import MessagePartEvent, publish

COALESCE_SECONDS = 0.05


class PartPublisher:
    def __init__(
        self,
        chat_id: object,
        *,
        interval: float = COALESCE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[object, MessagePartEvent], None] = publish,
    ) -> None:
        self.chat_id = chat_id
        self.interval = interval
        self.clock = clock
        self.send = send
        self._buffer: dict[tuple[int, str], list[str]] = {}
        self._order: list[tuple[int, str]] = []
        self._last_flush: float | None = None

    def on_text_delta(self, index: int, text: str) -> None:
        self._add(index, "text", text)

    def on_tool_input_delta(self, index: int, partial_json: str) -> None:
        self._add(index, "tool_input", partial_json)

    def _add(self, index: int, kind: str, delta: str) -> None:
        if not delta:
            return
        key = (index, kind)
        if key not in self._buffer:
            self._buffer[key] = []
            self._order.append(key)
        self._buffer[key].append(delta.replace("\x00", ""))
        self.tick()

    def tick(self) -> None:
        """Flush when the first delta of the reply is waiting or the interval has passed."""
        if not self._order:
            return
        now = self.clock()
        if self._last_flush is None or now - self._last_flush >= self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        for index, kind in self._order:
            delta = "".join(self._buffer[(index, kind)])
            if delta:
                self.send(
                    self.chat_id,
                    MessagePartEvent(
                        type="message_part", part={"index": index, "type": kind, "delta": delta}
                    ),
                )
        self._buffer.clear()
        self._order.clear()
        self._last_flush = self.clock() if now is None else now

    def reset(self) -> None:
        """Drop buffered deltas and tell viewers to discard what they got (the reply is being retried)."""
        self._buffer.clear()
        self._order.clear()
        self._last_flush = None
        self.send(
            self.chat_id,
            MessagePartEvent(type="message_part", part={"index": -1, "type": "reset", "delta": ""}),
        )

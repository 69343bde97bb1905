"""What every service is built from: its settings, codec, topics, dead letters and views.

Built the same way by the router, the sender, the log-sink and the API, so none of them
writes out that wiring again.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookstream.core.codec import Codec, default_codec
from hookstream.core.deadletter import DeadLetterSink
from hookstream.core.records import Principal, Webhook
from hookstream.core.settings import Settings
from hookstream.core.topics import Topics
from hookstream.core.view import ChangeHandler, CompactedView, principal_view, webhook_view
from hookstream.runtime.metrics import count_dead_letter


@dataclass(frozen=True, eq=False)
class ServiceContext:
    settings: Settings
    codec: Codec
    topics: Topics
    # The sink of records refused outside any transaction: the views' poison, the log-sink's.
    dead_letters: DeadLetterSink

    @classmethod
    def build(
        cls, settings: Settings, service_name: str, codec: Codec | None = None
    ) -> ServiceContext:
        codec = codec or default_codec()
        topics = Topics.from_settings(settings)
        dead_letters = DeadLetterSink(settings, codec, topics.dlq, service_name, count_dead_letter)
        return cls(settings, codec, topics, dead_letters)

    def webhook_view(
        self, on_change: ChangeHandler[Webhook] | None = None
    ) -> CompactedView[Webhook]:
        """A view of `webhooks`, not started; its poison goes to this service's dead letters."""
        return webhook_view(
            self.settings, self.codec, self.topics.webhooks, self.dead_letters, on_change
        )

    def principal_view(self) -> CompactedView[Principal]:
        """A view of `principals`, not started; its poison goes to this service's dead letters."""
        return principal_view(self.settings, self.codec, self.topics.principals, self.dead_letters)

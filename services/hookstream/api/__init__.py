"""The api service: webhook management, events, the delivery log and replay over HTTP."""

"""The logsink service."""

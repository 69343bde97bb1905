"""Command-line tools over the services: status, demo, receiver, local Kafka, topics, secrets."""

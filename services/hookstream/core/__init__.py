"""The shared core every service imports: settings, Kafka wiring, codecs, signing, views."""

"""The web console at /console: server-rendered pages over the same domain logic as /v1/."""

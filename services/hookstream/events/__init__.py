"""Events as the router and the API see them: the event-type catalog and the body envelope.

Beside core rather than in it: only the router (shaping, redaction) and the API (validation,
test events) read the catalog; the sender sends bodies as they are.
"""

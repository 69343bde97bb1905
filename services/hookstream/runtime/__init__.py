"""How a service process runs, over the contract in `core`.

The runners (signals, readiness, grace, failure propagation), the ops listener, logging set-up,
the context every service builds, and the asyncio face on the Kafka producer.
"""

"""`make bench`: hookstream's throughput, latency and isolation figures on this machine.

Run `python -m bench --help` (or `make bench`); bench/README.md explains every stage.
"""

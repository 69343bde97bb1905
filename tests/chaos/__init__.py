"""The chaos suite: the whole pipeline under load while services are killed -9 (issue 6).

`make chaos` runs the full plan on a broker of its own (which it restarts once);
`tests/chaos/test_chaos.py` runs the short plan on the session broker in `make test`.
"""

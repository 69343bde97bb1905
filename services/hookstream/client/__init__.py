"""The management API's client side: a small HTTP client and the CLI commands built on it.

Services never import this package; only the `hookstream` command does.
"""

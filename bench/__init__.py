"""Benchmark clients: they drive a running capserve (and its peers) over HTTP.

The server never imports this package."""

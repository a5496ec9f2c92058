"""capserve on Ray Serve: replicas that are each a whole capserve runtime, behind an ingress.

The data flow: HTTP -> the Ray Serve proxy -> `ingress` (reads a request's texts, forwards the
request unchanged) -> `affinity_router` (Ray Serve's request-router API: the replica whose
caches hold those texts, unless it is busy) -> `replica` (a `server.runtime.Runtime` and the
same FastAPI app as `capserve serve`) -> its engines. `application` binds them from the config;
`run` starts them on a local or existing Ray cluster (`capserve serve --ray`).

Nothing under processors/ or capabilities/ imports this package.
"""

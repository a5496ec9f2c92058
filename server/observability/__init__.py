"""What operators read: /stats counters and latencies (stats.py, tenants.py), Prometheus metrics
(metrics.py counted as it happens, runtime_collector.py read at scrape time, http_metrics.py per
request), and label drift (drift.py, divergence.py)."""

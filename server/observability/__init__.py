"""What operators read: counters, latencies, and (later) metrics and drift."""

"""The result cache: a (capability, text) result computed once is reused across windows and
replicas. L1 lives in process; L2, optional, in Redis."""

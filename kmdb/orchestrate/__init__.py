"""The passes as RQ jobs: job functions, the queue, the graph, liveness, workers, following, status."""

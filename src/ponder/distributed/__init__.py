"""Problems fanned out over a Ray cluster, each worker with its own engine."""

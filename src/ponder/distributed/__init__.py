"""Problems fanned out over a Ray cluster, each worker with its own engine (`RayPool`, a `ponder.jobs.Pool`)."""

from ponder.distributed.pool import RayPool

__all__ = ["RayPool"]

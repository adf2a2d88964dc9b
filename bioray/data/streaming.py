"""The one cap on what a streaming Ray Data pass holds in flight, shared by every corpus stage."""

from __future__ import annotations

IN_FLIGHT_BYTES = 512 * 2**20  # blocks read ahead of the operators that consume them, whatever the corpus size


def capped(dataset):
    """The dataset, its executor limited to IN_FLIGHT_BYTES of object-store blocks: peak memory then
    stays the same for a corpus ten or a thousand times larger."""
    limits = dataset.context.execution_options.resource_limits
    dataset.context.execution_options.resource_limits = limits.copy(object_store_memory=IN_FLIGHT_BYTES)
    return dataset

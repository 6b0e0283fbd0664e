"""Running a whole scenario end to end: the pipeline over simulation, keys, nodes and coordinator, and the
worker processes every stage runs its partitioned work on."""

"""Journey tests (`nurture test`): personas in `sequences/tests/*.yaml` played through the
real scheduler by simulate, their expectations and invariants checked, and the emails they
receive kept as snapshots. Imports simulate and everything below it."""

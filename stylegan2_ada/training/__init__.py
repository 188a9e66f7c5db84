"""Training: loss, loop, snapshots, statistics and distributed helpers."""

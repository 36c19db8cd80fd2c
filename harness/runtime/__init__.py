"""How a measurement runs: timing on both clocks, peak memory, isolated worker processes,
devices and out-of-memory errors, and the training loop the accuracy tasks share."""

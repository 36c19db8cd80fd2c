"""The sweep engine: a suite file → validated cells → executed (serially, in a process pool or on
Ray) → one crash-safe tidy results table. Free of torch: tasks import it when they run.

Data flows one way: `suite` (schema, reading, validation, expansion into `cell`s) → `runner`
(execute one cell, executors, the driver, progress) → `store` (cell files and results.parquet,
whose columns `results` defines).
"""

"""Built-in tasks. Every module here not starting with "_" is imported on the first task lookup
(harness.registry.TASKS), so a module must be harmless to import: no work at import time."""

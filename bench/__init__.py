"""UnionHub benchmarks: ``make bench`` (``python -m bench.run_all``) runs them all on the embedded stack.

``bench.common`` starts a stack the way the end-to-end tests do, drives concurrent HTTP load, computes percentiles
and writes ``bench/results/<name>.json``. Each ``bench/<name>.py`` also runs alone: ``python -m bench.<name>``.
"""

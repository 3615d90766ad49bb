"""Speed, load and soak measurements, run as scripts (``python benchmarks/bench_load.py``).

A package only so that the import contracts can check it: benchmarks import the servers and data
of ``tests.harness``, never a test module.
"""

"""Building blocks of the benchmark harness (``bench/run.py``)."""

"""Benchmarks for persona-agents: `python -m benchmarks.run [--quick] [--only NAME]`.

Speed is measured here, never asserted in unit tests. All load goes to a sandbox on 127.0.0.1 and every
loop is bounded in count and time.
"""

"""Benchmark harness: a streaming load generator for OpenAI-compatible servers, the metrics of
docs/reference metrics.md, server backends that execute a plan, a results database and run comparison.

Never imports torch: it must run beside any server on any machine.
"""

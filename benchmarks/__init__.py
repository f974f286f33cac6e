"""Performance benchmarks: ``python -m benchmarks.run [--quick]`` prints one table (see README.md)."""

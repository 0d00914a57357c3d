"""The benchmarks (run from the repository root as ``python -m benchmarks.<name>``) and the
process inspection they and the tests share (:mod:`benchmarks.procs`); not in the wheel."""

"""``python -m benchmarks``: every engine-core benchmark, each beside its baseline."""

from benchmarks import bench_engine, bench_scripts

bench_scripts.main()
bench_engine.main()

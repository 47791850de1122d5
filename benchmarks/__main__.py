"""``python -m benchmarks``: every engine-core benchmark, each beside its baseline, and the
trigger transports beside the HTTP webhook (figures also written as JSON under
``.eventray/bench/``)."""

from benchmarks import bench_engine, bench_scripts, bench_triggers

bench_scripts.main()
bench_engine.main()
bench_triggers.main([])

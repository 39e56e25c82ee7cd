"""`imagejobs bench` / `scripts/bench`: speed measured as ratios against references run on the
same database in the same run (procrastinate's own no-op task, its bare defer), because shared
machines are noisy. See docs/benchmarks.md."""

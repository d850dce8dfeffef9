"""Benchmarks, run by bin/bench (`python -m kmdb.bench`): they measure, they never fail on a slow run.

- imports: kmdb's import through RQ workers (and inline) against MariaDB's own
  bulk load of the same final rows, measured in the same run;
- `bin/bench scale ...` runs kmdb.bench_scale, where the build has it.

The pieces: s3 (moto's S3 server, shared with the tests), commands (running
kmdb's console scripts), measure (CPU time and peak memory of processes),
server (the MariaDB server and the databases a run makes), runs (one import
and its checks), reload (the yardstick) and report (the tables printed).
"""

"""Count the Spark jobs and stages of one Spark ingest run (issue 14, item 1's Spark part).

    .venv/bin/python benchmarks/spark_jobs.py [--days 31] [--adaptive true|false]

Lands the first `--days` real flights days of 2013 into a temporary lake, ingests them
with the Spark engine (`local[2]`, as `benchmarks/ingest_engines.py` does) and reads
Spark's status tracker: how many jobs and stages the run submitted, and which call site
started each job (`--verbose`). `--adaptive` sets `spark.sql.adaptive.enabled` for the
run (Spark's default is true: adaptive execution submits each shuffle stage as a job).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--adaptive", choices=["true", "false"], default=None)
    parser.add_argument("--verbose", action="store_true", help="print each job's stages")
    args = parser.parse_args()

    from tasks.core.lake import Lake
    from tasks.datasets import get_dataset
    from tasks.ingest.spark_engine import spark_session
    from tasks.ingest.stage import ingest_days
    from tasks.landing.simulator import land_days

    days = [date(2013, 1, 1) + timedelta(days=i) for i in range(args.days)]
    with tempfile.TemporaryDirectory(prefix="nightshift-spark-jobs-") as root:
        lake = Lake(root)
        land_days(lake, get_dataset("flights"), days[0], days[-1])
        dims = lake.latest_dimension_snapshot("flights", days[-1])
        spark = spark_session("local[2]", shuffle_partitions=4)
        if args.adaptive:
            spark.conf.set("spark.sql.adaptive.enabled", args.adaptive)
        tracker = spark.sparkContext.statusTracker()
        before = set(tracker.getJobIdsForGroup(None))
        started = time.perf_counter()
        reports = ingest_days(root, "flights", days, dims, engine="spark", spark=spark)
        seconds = time.perf_counter() - started
        jobs = sorted(set(tracker.getJobIdsForGroup(None)) - before)
        infos = {j: tracker.getJobInfo(j) for j in jobs}
        stages = sum(len(i.stageIds) for i in infos.values() if i)
        print(
            f"{args.days} days, {sum(r.raw_rows for r in reports):,} flights rows: "
            f"{len(jobs)} Spark jobs, {stages} stages, ingest {seconds:.1f} s "
            f"(adaptive execution: {spark.conf.get('spark.sql.adaptive.enabled')})"
        )
        for job, info in infos.items() if args.verbose else []:
            names = [getattr(tracker.getStageInfo(s), "name", "?") for s in sorted(info.stageIds)]
            print(f"  job {job}: {len(names)} stage(s), first {names[0]}")
        spark.stop()


if __name__ == "__main__":
    main()

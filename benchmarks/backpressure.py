"""What the pub/sub bridge does when Celery cannot keep up: memory, spool, Redis buffer, loss.

    python -m benchmarks.backpressure [--events 200000] [--rate 40000] [--broker-rate 10000]
                                      [--limits-mb 0,64,16]

For each memory limit (0: unbounded, the bridge's behaviour before
``BRIDGE_MAX_BUFFER_BYTES``), a child process runs the real ``Bridge`` (pub/sub
reader, sender, spool) whose ``send`` is slowed to ``--broker-rate`` events/s,
like a Celery broker that has fallen behind (it only sleeps: no broker is
involved). This process publishes ``--events`` events of the simulator's mix on
real Redis pub/sub at ``--rate`` events/s while sampling ``CLIENT LIST`` for the
bridge's output buffer; the child waits until every event was handed over and
reports its peak RSS growth (VmHWM minus the RSS before the bridge started),
the peak bytes it held, what went through the spool, and whether every event
id arrived exactly once. Nothing is written to Redis keys: the channels carry a
prefix of the run's own (pub/sub ignores DB numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from analytics.config import Settings
from benchmarks import procs
from bridge.relay import Bridge
from loadgen import publishing

#: The repository: the child is started there, so that `-m benchmarks.backpressure` resolves.
ROOT = Path(__file__).resolve().parent.parent

UNBOUNDED = 1 << 50


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(args: argparse.Namespace) -> None:
    """Run a bridge with a slow send until ``--events`` events were handed over; print JSON."""
    limit = args.limit_mb << 20 if args.limit_mb else UNBOUNDED
    settings = dataclasses.replace(
        Settings.from_env({}),
        redis_url=args.redis_url,
        event_channel_pattern=f"{args.prefix}:*",
        bridge_max_buffer_bytes=limit,
        bridge_log_interval=3600,
    )
    # One byte per event (not a set of ids), so that the tally does not weigh in the RSS.
    seen = bytearray(args.events)
    handed_over = duplicates = 0
    handed = threading.Event()

    def send(
        task: str, queue: str, items: list[list[Any]], *, by_type: dict[str, int] | None = None
    ) -> None:
        nonlocal duplicates, handed_over
        time.sleep(len(items) / args.broker_rate)
        for item in items:
            index = int(orjson.loads(item[1])["event_id"].replace("-", "")[16:], 16)
            duplicates += seen[index]
            handed_over += not seen[index]
            seen[index] = 1
        if handed_over >= args.events:
            handed.set()

    before = _vm("VmRSS")
    relay = Bridge(settings, send)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    relay.subscribed.wait(10)
    print(json.dumps({"ready": relay.client_name}), flush=True)
    handed.wait(args.timeout)
    done = time.time()
    relay.stop()
    thread.join(60)
    print(
        json.dumps(
            {
                "done_at": done,
                "handed_over": handed_over,
                "duplicates": duplicates,
                "rss_growth": _vm("VmHWM") - before,
                "peak_held": relay.peak_held_bytes,
                "spilled": relay.spilled,
                "spool_peak": relay.spool_peak_bytes,
            }
        ),
        flush=True,
    )


def run(args: argparse.Namespace, limit_mb: int, stream: publishing.Stream, prefix: str) -> dict:
    client = redis.Redis.from_url(args.redis_url)
    argv = [
        sys.executable,
        "-m",
        "benchmarks.backpressure",
        "--child",
        "--limit-mb",
        str(limit_mb),
        "--prefix",
        prefix,
    ]
    argv += ["--events", str(args.events), "--broker-rate", str(args.broker_rate)]
    argv += ["--redis-url", args.redis_url, "--timeout", str(args.timeout)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        name = json.loads(proc.stdout.readline())["ready"]
        with procs.ClientWatch(client, name, interval=0.05) as watch:
            published = publishing.publish(client, stream, args.rate)
            result = json.loads(proc.stdout.readline())
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.close()
    result.update(
        limit_mb=limit_mb,
        published_rate=published.rate,
        unreceived=published.unreceived,
        drained_in=result["done_at"] - published.started,
        max_omem=watch.max_omem,
        disconnected=watch.disconnected,
        lost=len(stream) - result["handed_over"],
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=40_000, help="events/s published")
    parser.add_argument("--broker-rate", type=float, default=10_000, help="events/s sent")
    parser.add_argument("--limits-mb", default="0,64,16", help="memory limits; 0 = unbounded")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limit-mb", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    prefix = f"bp-{uuid.uuid4().hex[:8]}:events"
    stream = publishing.build_stream(
        publishing.simulate(args.events, seed=11), channel_prefix=prefix
    )
    print(
        f"{args.events:,} events ({stream.size_bytes / 1e6:.0f} MB) offered at {args.rate:,.0f}/s "
        f"to a bridge whose send takes {args.broker_rate:,.0f} events/s",
        file=sys.stderr,
    )
    header = (
        f"{'limit':>9}  {'published/s':>11}  {'lost':>4}  {'dup':>3}  {'RSS growth':>10}  "
        f"{'peak held':>9}  {'spooled':>8}  {'spool peak':>10}  {'max omem':>8}  "
        f"{'disconnect':>10}  {'all sent after':>14}"
    )
    print(header)
    for limit_mb in (int(part) for part in args.limits_mb.split(",")):
        r = run(args, limit_mb, stream, prefix)
        print(
            f"{(str(limit_mb) + ' MiB') if limit_mb else 'unbounded':>9}  "
            f"{r['published_rate']:>11,.0f}  {r['lost'] + r['unreceived']:>4}  "
            f"{r['duplicates']:>3}  {r['rss_growth'] / 2**20:>7.0f} MiB  "
            f"{r['peak_held'] / 2**20:>5.0f} MiB  {r['spilled']:>8,}  "
            f"{r['spool_peak'] / 2**20:>6.0f} MiB  {r['max_omem'] / 1024:>5.0f} KB  "
            f"{'yes' if r['disconnected'] else 'no':>10}  {r['drained_in']:>13.1f}s",
            flush=True,
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

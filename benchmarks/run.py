"""Benchmark fleche's stock ``SshCache`` against ``fleche_ssh.ParamikoCache``, side by side.

    python benchmarks/run.py            # full run, about ten minutes
    python benchmarks/run.py --smoke    # seconds: tiny sizes, one repetition (CI)
    python benchmarks/run.py --only shared  # only the rows of a login shared by processes

Starts its own loopback sshd (and delaying relays for the latency and
wide-area figures, one of them also capping the bandwidth), builds a
throwaway ``$HOME``, and measures both clients in the same run against
the same server and the same on-disk remote cache.  The clients take
turns at every step, each going first half of the time, so that drift on
a busy machine hits both.  Figures are medians.

Prints ``metric | unit | stock | fleche-ssh | ratio | target | pass/fail``
and writes ``results/<mode>.json`` (every sample, the environment, the
negotiated ciphers), ``results/<mode>.png`` and ``results/<mode>-wide-area.png``
(throughput against round-trip time).  Targets are reported, not
enforced: the exit status is 0 unless the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import measure
import report
from harness import HOST, Bench, bench_world, relay_host
from impls import OURS, STOCK, Impl, alternating
from measure import MIB, median_of

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    """How much of everything to measure."""

    name: str
    import_reps: int
    first_answer_reps: int
    reps: int
    round_trip_calls: int
    bulk_mib: tuple[int, ...]
    scaling_mib: tuple[int, ...]
    #: Small sizes are repeated within a repetition until about this much has
    #: moved (at most 8 times): they are quick, and noisier than big ones.
    bulk_batch_mib: int
    memory_mib: int
    memory_reps: int
    rtts_ms: tuple[int, ...]
    #: Thread counts of the concurrency figures: each with one channel (pipelined)
    #: and with as many channels as threads, next to stock.
    threads: tuple[int, ...]
    concurrency_seconds: float
    concurrency_reps: int
    #: Added round trips of the wide-area rows, their value sizes and repetitions
    #: (the slowest round trip gets ``wan_slow_reps``: its stock transfers take long).
    wan_rtts_ms: tuple[int, ...]
    wan_mib: tuple[int, ...]
    wan_reps: int
    wan_slow_reps: int
    #: The bandwidth-capped link: (added round trip ms, Mbit/s), and its value size.
    capped: tuple[int, int]
    capped_mib: int
    #: Worker processes loading at once through one shared login (and through their own),
    #: and the MiB each loads.
    at_once_workers: int = 4
    at_once_mib: int = 64


FULL = Plan(name="full", import_reps=3, first_answer_reps=7, reps=5, round_trip_calls=2000,
            bulk_mib=(64, 256), scaling_mib=(1, 16, 64, 256), bulk_batch_mib=64,
            memory_mib=256, memory_reps=3, rtts_ms=(10, 50), threads=(1, 2, 4, 8),
            concurrency_seconds=2.0, concurrency_reps=2, wan_rtts_ms=(10, 50, 100),
            wan_mib=(64, 256), wan_reps=3, wan_slow_reps=1, capped=(50, 100), capped_mib=64)
SMOKE = Plan(name="smoke", import_reps=1, first_answer_reps=1, reps=1, round_trip_calls=50,
             bulk_mib=(2,), scaling_mib=(1, 2), bulk_batch_mib=1, memory_mib=2, memory_reps=1,
             rtts_ms=(50,), threads=(1, 8), concurrency_seconds=0.5,
             concurrency_reps=1, wan_rtts_ms=(10,), wan_mib=(2,), wan_reps=1, wan_slow_reps=1,
             capped=(10, 100), capped_mib=2, at_once_workers=2, at_once_mib=1)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def open_cache(impl: Impl, kwargs: dict[str, Any], channels: int = 1) -> Any:
    cache = impl.make(kwargs, channels)
    cache.info()
    return cache


def finish(impl: Impl, cache: Any) -> None:
    cache.close()
    impl.reset()


def by_impl(fill: Callable[[], Any]) -> dict[str, Any]:
    return {impl.name: fill() for impl in (STOCK, OURS)}


def pair(samples: dict[str, list[float]]) -> tuple[float, float]:
    return median_of(samples[STOCK.name]), median_of(samples[OURS.name])


def measure_imports(plan: Plan, samples: dict) -> None:
    for rep in range(plan.import_reps):
        for impl in alternating(rep):
            samples["import"][impl.name].append(measure.import_seconds(impl))
    progress(f"client import: {pair(samples['import'])}")


def measure_first_answer(bench: Bench, plan: Plan, samples: dict) -> None:
    kwargs = bench.cache_kwargs()
    for impl in (STOCK, OURS):  # untimed: imports, page cache, sshd's first fork
        measure.first_answer(impl, kwargs)
    for rep in range(plan.first_answer_reps):
        for impl in alternating(rep):
            samples["first_answer"][impl.name].append(measure.first_answer(impl, kwargs))
    progress(f"first answer: {pair(samples['first_answer'])}")


def measure_round_trips_and_bulk(bench: Bench, plan: Plan, samples: dict) -> dict[str, str]:
    """Both clients open side by side, taking turns at every step.

    Load on a shared machine drifts within seconds, so the clients alternate
    at the finest grain that still measures one thing: a run of round trips
    (in the order stock, ours, ours, stock, or the reverse), one value saved
    and loaded.
    """
    kwargs = bench.cache_kwargs()
    digests: dict[str, str] = {}
    turn = tag = 0
    for rep in range(plan.reps):
        caches: dict[str, Any] = {}
        try:
            for impl in alternating(rep):
                caches[impl.name] = open_cache(impl, kwargs)
                measure.round_trips(caches[impl.name], 20)
            for impl in (*alternating(rep), *alternating(rep + 1)):
                wall, cpu = measure.round_trips_and_cpu(caches[impl.name], plan.round_trip_calls)
                samples["round_trip"][impl.name].append(wall)
                samples["round_trip_cpu"][impl.name].append(cpu)
            for mib in plan.scaling_mib:
                for _ in range(min(8, max(1, plan.bulk_batch_mib // mib))):
                    turn += 1
                    for impl in alternating(turn):
                        tag += 1
                        result = measure.bulk(caches[impl.name], measure.make_value(mib * MIB, tag),
                                              bench.sshd.process.pid)
                        bulk = samples["bulk"][impl.name]
                        bulk["save"].setdefault(mib, []).append(result.save)
                        bulk["load"].setdefault(mib, []).append(result.load)
                        bulk["sshd_cpu"].setdefault(mib, []).append(result.load_sshd_cpu)
                        digests[f"{impl.name} {mib}"] = result.digest
        finally:
            for impl in (STOCK, OURS):
                if impl.name in caches:
                    finish(impl, caches[impl.name])
        progress(f"round trips and bulk: repetition {rep + 1}/{plan.reps} done")
    return {impl.name: digests[f"{impl.name} {plan.memory_mib}"] for impl in (STOCK, OURS)}


def measure_memory(bench: Bench, plan: Plan, samples: dict, digests: dict[str, str]) -> None:
    kwargs = bench.cache_kwargs()
    for rep in range(plan.memory_reps):
        for impl in alternating(rep):
            probe = measure.peak_memory(impl, kwargs, digests[impl.name], plan.memory_mib * MIB)
            samples["memory"][impl.name].append(probe["multiple"])
    progress(f"peak memory: {pair(samples['memory'])}")


def concurrency_configs(plan: Plan) -> list[tuple[Impl, int, int]]:
    """(client, threads, channels): stock, then ours on one channel and on one per thread."""
    configs: list[tuple[Impl, int, int]] = []
    for threads in plan.threads:
        configs += [(STOCK, threads, 1), (OURS, threads, 1)]
        if threads > 1:
            configs.append((OURS, threads, threads))
    return configs


def concurrency_key(impl: Impl, threads: int, channels: int) -> str:
    """The sample key: ``stock/8``, ``fleche-ssh/8/1`` (8 threads, 1 channel) ..."""
    return f"stock/{threads}" if impl is STOCK else f"{impl.name}/{threads}/{channels}"


def measure_concurrency(bench: Bench, plan: Plan, samples: dict) -> None:
    """Per added RTT and thread count: stock, ours pipelined on 1 channel, ours on N channels.

    After each run of ours, the number of channels it opened is recorded:
    one channel means one remote server process served every thread.
    """
    configs = concurrency_configs(plan)
    for rtt in plan.rtts_ms:
        kwargs = bench.cache_kwargs(relay_host(rtt))
        per = samples["concurrency"][rtt]
        for rep in range(plan.concurrency_reps):
            for impl, threads, channels in configs if rep % 2 == 0 else configs[::-1]:
                cache = open_cache(impl, kwargs, channels)
                try:
                    ops = measure.ops_per_second(cache, threads, plan.concurrency_seconds)
                    if impl is OURS:
                        samples["servers"][f"{rtt}/{threads}/{channels}"] = (
                            cache._conn.open_channels)
                finally:
                    finish(impl, cache)
                per.setdefault(concurrency_key(impl, threads, channels), []).append(ops)
        progress(f"concurrency RTT +{rtt} ms: "
                 f"{ {k: round(median_of(v)) for k, v in per.items()} }")


def wide_area_links(plan: Plan) -> list[tuple[str, str, int]]:
    """(sample key, host alias, repetitions) of every wide-area link the plan measures."""
    links = [(f"+{rtt} ms", relay_host(rtt), plan.wan_slow_reps if rtt >= 100 else plan.wan_reps)
             for rtt in plan.wan_rtts_ms]
    rtt, mbit = plan.capped
    return [*links, (f"{mbit} Mbit/s + {rtt} ms", relay_host(rtt, mbit), plan.wan_reps)]


def measure_wide_area(bench: Bench, plan: Plan, samples: dict) -> None:
    """Save and load through each relay, both clients open side by side, taking turns.

    The caches stay open for all of a link's repetitions: a channel's
    receive window, once grown, serves the loads after the first, as it
    does for a cache in use.
    """
    tag = 20_000
    for link, host, reps in wide_area_links(plan):
        sizes = (plan.capped_mib,) if "Mbit" in link else plan.wan_mib
        per = samples["wan"].setdefault(link, by_impl(lambda: {"save": {}, "load": {},
                                                               "sshd_cpu": {}}))
        caches = {impl.name: open_cache(impl, bench.cache_kwargs(host)) for impl in (STOCK, OURS)}
        try:
            for rep in range(reps):
                for mib in sizes:
                    for impl in alternating(rep):
                        tag += 1
                        result = measure.bulk(caches[impl.name], measure.make_value(mib * MIB, tag),
                                              bench.sshd.process.pid)
                        per[impl.name]["save"].setdefault(mib, []).append(result.save)
                        per[impl.name]["load"].setdefault(mib, []).append(result.load)
                        per[impl.name]["sshd_cpu"].setdefault(mib, []).append(result.load_sshd_cpu)
        finally:
            for impl in (STOCK, OURS):
                finish(impl, caches[impl.name])
        loads = {impl: {mib: round(mib * MIB / 1e6 / median_of(t)) for mib, t in
                        per[impl]["load"].items()} for impl in per}
        progress(f"wide area {link}: load MB/s {loads}")


@contextlib.contextmanager
def openssh_master(bench: Bench) -> Iterator[str]:
    """A live ``ssh -M`` master for the benchmark host; yields its control socket path."""
    where = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))
    sock = str(where / "master.sock")
    try:
        subprocess.run(["ssh", *bench.ssh_options, "-M", "-S", sock, "-N", "-f",
                        "-o", "ControlPersist=no", HOST], check=True, timeout=60,
                       stdin=subprocess.DEVNULL, capture_output=True)
        yield sock
    finally:
        subprocess.run(["ssh", *bench.ssh_options, "-S", sock, "-O", "exit", HOST],
                       timeout=30, stdin=subprocess.DEVNULL, capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def measure_through_master(bench: Bench, plan: Plan, samples: dict) -> None:
    """Both clients through one live OpenSSH master: first answer, round trips, bulk."""
    with openssh_master(bench) as sock:
        kwargs = bench.cache_kwargs()
        kwargs["ssh_options"] = [*kwargs["ssh_options"], "-o", f"ControlPath={sock}"]
        per = samples["master"]
        for impl in (STOCK, OURS):  # untimed: the master's first session, page cache
            measure.first_answer(impl, kwargs)
        for rep in range(plan.first_answer_reps):
            for impl in alternating(rep):
                per["first_answer"][impl.name].append(measure.first_answer(impl, kwargs))
        mib = plan.bulk_mib[0]
        for rep in range(plan.reps):
            caches = {impl.name: open_cache(impl, kwargs) for impl in alternating(rep)}
            try:
                for impl in (*alternating(rep), *alternating(rep + 1)):
                    per["round_trip"][impl.name].append(
                        measure.round_trips(caches[impl.name], plan.round_trip_calls))
                for impl in alternating(rep):
                    result = measure.bulk(caches[impl.name],
                                          measure.make_value(mib * MIB, 10_000 + rep))
                    per["save"][impl.name].append(result.save)
                    per["load"][impl.name].append(result.load)
            finally:
                for impl in (STOCK, OURS):
                    finish(impl, caches[impl.name])
        progress(f"through an OpenSSH master: round trip {pair(per['round_trip'])}")


def measure_through_holder(bench: Bench, plan: Plan, samples: dict) -> None:
    """One cache's own login in this process, against a second process riding it.

    The second process is what a pool worker is: it unpickles the cache and
    opens its channels through this process's holder.  Both run the same
    round trips and the same save and load, taking turns; the "stock"
    column of these rows is the direct figure.  Each second process's
    channel runs a new remote server, so both sides first move one value of
    the timed size untimed (:func:`measure.warm`): what is compared is then
    the relay, not a new server against one that moved values before.
    """
    per = samples["shared"]
    mib = plan.bulk_mib[0]
    cache = open_cache(OURS, bench.cache_kwargs())
    try:
        measure.warm(cache, mib * MIB, 20_000 + (1 << 40))  # as each second process does
        for rep in range(plan.reps):
            order = ("direct", "shared") if rep % 2 == 0 else ("shared", "direct")
            for way in order:
                tag = 20_000 + 2 * rep + (way == "shared")
                if way == "shared":
                    got = measure.through_holder(cache, plan.round_trip_calls, mib * MIB, tag)
                else:
                    result = measure.bulk(cache, measure.make_value(mib * MIB, tag))
                    got = {"round_trip": measure.round_trips(cache, plan.round_trip_calls),
                           "save": result.save, "load": result.load}
                for metric, value in got.items():
                    per[metric][way].append(value)
    finally:
        finish(OURS, cache)
    progress(f"through a shared login: round trip {median_of(per['round_trip']['direct'])}, "
             f"{median_of(per['round_trip']['shared'])}")


def measure_loads_at_once(bench: Bench, plan: Plan, samples: dict) -> None:
    """Worker processes loading a value each at once: through this process's login, or their own.

    The "shared" workers get the cache pickled with this process's offer,
    so all their channels are relayed by this process over its one
    connection; the "own" ones get it with ``control_master = "no"`` and
    each log in.  The "stock" column of the row is the "own" figure.
    """
    per = samples["at_once"]
    kwargs = bench.cache_kwargs()
    size = plan.at_once_mib * MIB
    cache = open_cache(OURS, kwargs)
    try:
        digests = [str(cache._rpc("save_value", measure.make_value(size, 30_000 + i)))
                   for i in range(plan.at_once_workers)]
    finally:
        finish(OURS, cache)
    ways = {"shared": kwargs, "own": {**kwargs, "control_master": "no"}}
    for rep in range(plan.reps):
        for way in ("shared", "own") if rep % 2 == 0 else ("own", "shared"):
            cache = open_cache(OURS, ways[way])
            try:
                per[way].append(measure.loads_at_once(cache, digests, size))
            finally:
                finish(OURS, cache)
    progress(f"{plan.at_once_workers} workers loading at once: MB/s {median_of(per['own'])} "
             f"with their own logins, {median_of(per['shared'])} through one")


@contextlib.contextmanager
def kept_logins() -> Iterator[None]:
    """A private runtime directory for ``control_persist`` holders, every holder ended after."""
    import os

    from fleche_ssh.share import local, persist
    from fleche_ssh.share.place import OVERRIDE

    where = Path(tempfile.mkdtemp(prefix="fsb-", dir="/tmp"))  # short: a socket's sun_path
    saved = os.environ.get(OVERRIDE)
    os.environ[OVERRIDE] = str(where)
    try:
        yield
    finally:
        for name in persist.names():
            persist.request(name, "logout", local.connect)
        if saved is None:
            os.environ.pop(OVERRIDE)
        else:
            os.environ[OVERRIDE] = saved
        shutil.rmtree(where, ignore_errors=True)


#: The second-process cases: (sample key, client, whether a live OpenSSH master is used).
SECOND_WAYS = (("kept", OURS, False), ("stock", STOCK, False),
               ("master", OURS, True), ("stock-master", STOCK, True))


def measure_second_process(bench: Bench, plan: Plan, samples: dict) -> None:
    """A fresh process's first call while a login is held, next to stock's.

    "kept": ours with ``control_persist``, its login held by the background
    process an untimed first run started; "master": ours through a live
    OpenSSH master; "stock" and "stock-master": ``SshCache`` logging in
    itself, and through that master.  Each sample is a new process (see
    ``secondprobe.py`` for how the channel's opening is seen).
    """
    per = samples["second"]
    with kept_logins(), openssh_master(bench) as sock:
        plain = bench.cache_kwargs()
        kwargs = {False: plain,
                  True: {**plain, "ssh_options": [*plain["ssh_options"], "-o",
                                                  f"ControlPath={sock}"]}}
        kept = {**plain, "control_persist": "10m"}
        cases = {key: (impl, kept if key == "kept" else kwargs[master])
                 for key, impl, master in SECOND_WAYS}
        for impl, kw in cases.values():  # untimed: starts the holder; page cache, first forks
            measure.second_process(impl, kw)
        for rep in range(plan.first_answer_reps):
            for key in list(cases) if rep % 2 == 0 else list(cases)[::-1]:
                got = measure.second_process(*cases[key])
                got["after_open"] = got["first_answer"] - got["channel_open"]
                for metric, value in got.items():
                    per[metric][key].append(value)
    progress("second process, call to channel open (ms): "
             f"{ {k: round(median_of(v) * 1000, 1) for k, v in per['channel_open'].items()} }")


def medians(samples: dict, plan: Plan) -> dict[str, Any]:
    return {
        "import": pair(samples["import"]),
        "first_answer": pair(samples["first_answer"]),
        "round_trip": pair(samples["round_trip"]),
        "round_trip_cpu": pair(samples["round_trip_cpu"]),
        "memory": pair(samples["memory"]),
        "bulk": _bulk_medians(samples["bulk"]),
        "wan": {link: _bulk_medians(per) for link, per in samples["wan"].items()},
        "concurrency": {rtt: {key: median_of(s) for key, s in per.items()}
                        for rtt, per in samples["concurrency"].items()},
        "servers": samples["servers"],
        "master": {metric: pair(per) for metric, per in samples["master"].items()},
        **shared_medians(samples),
    }


def shared_medians(samples: dict) -> dict[str, Any]:
    """The medians of the shared-login section (all that ``--only shared`` measures)."""
    return {
        "shared": {metric: (median_of(per["direct"]), median_of(per["shared"]))
                   for metric, per in samples["shared"].items()},
        "at_once": (median_of(samples["at_once"]["own"]),
                    median_of(samples["at_once"]["shared"])),
        "second": {metric: {key: median_of(s) for key, s in per.items()}
                   for metric, per in samples["second"].items()},
    }


def _bulk_medians(per_impl: dict[str, Any]) -> dict[str, Any]:
    return {impl: {op: {mib: median_of(s) for mib, s in per_size.items()}
                   for op, per_size in ops.items()}
            for impl, ops in per_impl.items()}


def environment(bench: Bench) -> dict[str, Any]:
    """Versions, CPU count and the ciphers each client actually negotiated."""
    import fleche
    import paramiko

    from fleche_ssh.ssh.pool import POOL

    cache = open_cache(OURS, bench.cache_kwargs())
    try:
        target = cache.target()
        transport = POOL.session(target, cache.login(target)).transport
        ours = {"cipher_out": transport.local_cipher, "cipher_in": transport.remote_cipher,
                "mac_out": transport.local_mac, "compression": transport.local_compression}
    finally:
        finish(OURS, cache)
    verbose = subprocess.run(["ssh", *bench.ssh_options, "-v", HOST, "true"],
                             capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL).stderr
    stock = dict(re.findall(r"kex: (server->client|client->server) cipher: (\S+)", verbose))
    return {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": _cpu_count(), "paramiko": paramiko.__version__,
        "fleche": getattr(fleche, "__version__", "?"), "sshd": bench.sshd.banner,
        "ssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
        "fleche_ssh_transport": ours, "stock_ssh_ciphers": stock,
        "remote_cache": "on-disk cloudpickle (tests/sshd.py write_remote_workdir)",
        "memory_metric": "peak RSS (VmHWM) growth across one load_value, fresh process per client",
        "commit": _git_head(),
    }


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repetition: checks the benchmark runs (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"directory for the JSON and PNG results (default {RESULTS})")
    parser.add_argument("--reps", type=int, help="override the repetitions of every metric")
    parser.add_argument("--only", choices=["shared"],
                        help="measure only this section (shared: a login shared between "
                             "processes); its results go to <mode>-<section>.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # sshd runs in a session of its own: on SIGTERM, unwind so that it is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    plan = SMOKE if args.smoke else FULL
    if args.reps:
        plan = replace(plan, first_answer_reps=args.reps, reps=args.reps,
                       memory_reps=args.reps, concurrency_reps=args.reps, wan_reps=args.reps,
                       wan_slow_reps=min(args.reps, plan.wan_slow_reps))
    samples: dict[str, Any] = {
        **{metric: by_impl(list)
           for metric in ("import", "first_answer", "round_trip", "round_trip_cpu", "memory")},
        "bulk": by_impl(lambda: {"save": {}, "load": {}, "sshd_cpu": {}}),
        "wan": {},
        "concurrency": {rtt: {} for rtt in plan.rtts_ms},
        "servers": {},
        "master": {metric: by_impl(list)
                   for metric in ("first_answer", "round_trip", "save", "load")},
        "shared": {metric: {"direct": [], "shared": []}
                   for metric in ("round_trip", "save", "load")},
        "at_once": {"own": [], "shared": []},
        "second": {metric: {key: [] for key, _, _ in SECOND_WAYS}
                   for metric in ("channel_open", "first_answer", "after_open")},
    }
    started = time.monotonic()
    with bench_world(sorted({*plan.rtts_ms, *plan.wan_rtts_ms}), [plan.capped]) as bench:
        progress(f"sshd on port {bench.sshd.port}; plan {plan.name}")
        env = environment(bench)
        progress(f"ciphers: fleche-ssh {env['fleche_ssh_transport']}, "
                 f"stock {env['stock_ssh_ciphers']}")
        if args.only is None:
            measure_imports(plan, samples)
            measure_first_answer(bench, plan, samples)
            digests = measure_round_trips_and_bulk(bench, plan, samples)
            measure_memory(bench, plan, samples, digests)
            measure_concurrency(bench, plan, samples)
            measure_wide_area(bench, plan, samples)
            measure_through_master(bench, plan, samples)
        measure_through_holder(bench, plan, samples)
        measure_loads_at_once(bench, plan, samples)
        measure_second_process(bench, plan, samples)
    med = medians(samples, plan) if args.only is None else shared_medians(samples)
    rows = report.rows(med, plan) if args.only is None else report.shared_rows(med, plan)
    print(report.table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{plan.name}{'' if args.only is None else '-' + args.only}.json"
    report.write_json(json_path, {"plan": asdict(plan), "environment": env,
                                  "seconds": time.monotonic() - started,
                                  "samples": samples, "medians": med}, rows)
    if args.only is not None:  # the plots are of the other sections
        print(f"\nwrote {json_path}\ntotal {time.monotonic() - started:.0f} s")
        return 0
    png_path = args.out / f"{plan.name}.png"
    wan_png_path = args.out / f"{plan.name}-wide-area.png"
    plotted = report.write_plot(png_path, med, plan) and report.write_wan_plot(
        wan_png_path, med, plan)
    print(f"\nwrote {json_path}" + (f", {png_path} and {wan_png_path}" if plotted else
                                     " (no plot: pip install matplotlib)"))
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

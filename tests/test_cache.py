"""ParamikoCache behaves as the stock SshCache does, against a real sshd.

Where it makes sense the stock ``fleche.remote.SshCache`` (the ``ssh`` binary)
talks to the same sshd and the same remote directory in the same test, so
"what one saves the other loads" is checked across the two implementations.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fleche
import fleche.remote
import numpy as np
import pytest
import support as sshd_helpers
from fleche.caches import Rejected
from fleche.call import Call
from fleche.digest import digest
from fleche.remote import SshCache
from support.caches import wait_for

from fleche_ssh import ParamikoCache

pytestmark = pytest.mark.timeout(60)


def remote_files(remote_dir) -> set[str]:
    return {str(p.relative_to(remote_dir)) for p in remote_dir.rglob("*") if p.is_file()}


def record(name: str, result, **arguments) -> Call:
    return Call(name=name, arguments=arguments, result=result)


# -- connecting lazily ----------------------------------------------------------


def test_constructing_does_no_network_io(make, sshd, pool):
    unresolvable = ParamikoCache(host="nowhere", hostname="nonexistent.invalid")
    assert unresolvable.host == "nowhere"

    connections = sshd.log_text().count("Connection from")
    cache = make()
    assert cache.target() not in pool
    assert sshd.log_text().count("Connection from") == connections

    assert cache.contains("0" * 64) is False
    assert cache.target() in pool
    assert wait_for(lambda: sshd.log_text().count("Connection from") == connections + 1)


# -- the fleche workflow --------------------------------------------------------


def test_fleche_function_runs_once_and_is_stored_on_the_remote_disk(
    make, client_home, remote_dir, remote_python
):
    runs = []

    @fleche.fleche
    def square(x):
        runs.append(x)
        return x * x

    cache = make()
    before = remote_files(remote_dir)
    with fleche.cache(cache):
        assert square(7) == 49
        assert square(7) == 49
        key = square.fleche.digest(7)
    assert runs == [7]
    written = remote_files(remote_dir) - before
    assert any(name.startswith("calls/") for name in written)
    assert any(name.startswith("values/") for name in written)

    # Another process, with its own cache instance and connection, loads it.
    script = (
        "import sys\n"
        "from fleche_ssh import ParamikoCache\n"
        "c = ParamikoCache(host='testhost', python=sys.executable, workdir=sys.argv[1])\n"
        "print(c.load(sys.argv[2]).result, c.info()['pid'])\n"
    )
    out = subprocess.run(
        [remote_python, "-c", script, str(remote_dir), str(key)],
        env={**os.environ, "HOME": str(client_home.home)},
        capture_output=True, text=True, timeout=45,
    )
    assert out.returncode == 0, out.stderr
    result, pid = out.stdout.split()
    assert result == "49"
    assert int(pid) != cache.info()["pid"]


def test_save_and_load_across_stock_and_paramiko(make):
    mine, stock = make(), make(SshCache)

    key = mine.save(record("paramiko.saved", [1, 2, 3], x=1))
    assert stock.contains(key)
    assert stock.load(key).result == [1, 2, 3]

    key2 = stock.save(record("stock.saved", {"a": 1}, y=2))
    assert mine.contains(key2)
    loaded = mine.load(key2)
    assert loaded.name == "stock.saved"
    assert dict(loaded.arguments) == {"y": 2}
    assert loaded.result == {"a": 1}
    assert mine.load_value(digest({"a": 1})) == {"a": 1}

    with pytest.raises(KeyError):
        mine.load("f" * 64)
    with pytest.raises(KeyError):
        mine.load_value("f" * 64)


def test_prepare_commit_evict_and_query_agree_with_stock(make):
    mine, stock = make(), make(SshCache)

    prepared = mine.prepare(record("prepared", None, x=10))
    key = prepared.commit(100)
    assert key == prepared.to_lookup_key()
    assert stock.load(key).result == 100

    for x in (1, 2, 3):
        stock.save(record("queried", x * 10, x=x))
    found = {lc.arguments["x"]: lc.result for lc in mine.query(name="queried")}
    assert found == {1: 10, 2: 20, 3: 30}
    assert [lc.result for lc in mine.query(name="queried", arguments={"x": 2})] == [20]
    stock_keys = {lc.to_lookup_key() for lc in stock.query(name="queried")}
    assert {lc.to_lookup_key() for lc in mine.query(name="queried")} == stock_keys

    mine.evict(key)
    assert not mine.contains(key)
    assert not stock.contains(key)


def test_expand_and_shrink_agree_with_stock(make):
    mine, stock = make(), make(SshCache)
    keys = [mine.save(record("digests", x, x=x)) for x in range(5)]

    for key in keys:
        assert mine.expand(key[:12]) == key
        short = mine.shrink(key)
        assert key.startswith(short) and len(short) < len(key)
        assert short == stock.shrink(key)
        assert mine.expand(short) == key
    assert mine.shrink(*keys) == stock.shrink(*keys)
    with pytest.raises(KeyError):
        mine.expand("f" * 12)


# -- connections -----------------------------------------------------------------


def test_operations_reuse_one_transport_and_one_channel(make, pool):
    cache = make()
    first = cache.info()["pid"]
    assert cache.contains("0" * 64) is False
    assert cache.info()["pid"] == first

    (pooled,) = pool.sessions()
    assert len(pooled.transport._channels.values()) == 1


def test_two_caches_to_one_host_share_the_transport_not_the_server(make, sshd, pool):
    logged_in = logins(sshd)
    one, two = make(), make()
    assert one.info()["pid"] != two.info()["pid"]
    assert wait_for(lambda: logins(sshd) == logged_in + 1)
    assert len(pool) == 1
    (pooled,) = pool.sessions()
    assert pool.get(one.target()) is pool.get(two.target()) is pooled
    assert len(pooled.transport._channels.values()) == 2


def logins(sshd) -> int:
    return sshd.log_text().count("Accepted publickey")


def test_reconnect_starts_a_new_server_without_logging_in_again(make, sshd, pool):
    cache = make()
    before = cache.info()["pid"]
    pooled = pool.get(cache.target())
    transport = pooled.transport
    assert wait_for(lambda: logins(sshd) > 0)
    logged_in = logins(sshd)

    cache.reconnect()
    after = cache.info()["pid"]
    assert after != before
    assert pool.get(cache.target()) is pooled
    assert pooled.transport is transport

    cache.close()
    assert cache.info()["pid"] not in (before, after)
    assert pool.get(cache.target()).transport is transport
    assert logins(sshd) == logged_in


def test_a_lost_connection_is_replaced_by_the_next_call(make, pool):
    cache = make()
    before = cache.info()["pid"]
    lost = pool.get(cache.target())
    lost.transport.close()

    # No reconnect() needed: the next call finds its channel dead and logs in again.
    assert cache.info()["pid"] != before
    assert pool.get(cache.target()) is not lost
    assert pool.get(cache.target()).alive()


def test_tcp_nodelay_is_set(make, pool):
    cache = make()
    cache.info()
    sock = pool.get(cache.target()).transport.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# -- info, read-only, version skew ------------------------------------------------


def test_info_has_the_stock_keys(make, remote_dir, remote_python):
    mine, stock = make(), make(SshCache)
    info, stock_info = mine.info(), stock.info()
    assert set(info) == set(stock_info)
    assert info["cwd"] == str(remote_dir)
    assert info["cache"] == stock_info["cache"]
    assert info["read_only"] is False
    assert info["cache_name"] is None


def test_readonly_cache_rejects_save_without_a_round_trip(make):
    cache = make(cache_name="readonly")
    assert cache.read_only is True
    assert cache.info()["cache_name"] == "readonly"
    calls = []
    original = cache._conn.call
    object.__setattr__(cache._conn, "call", lambda *a: calls.append(a[0]) or original(*a))

    with pytest.raises(Rejected):
        cache.save(record("readonly.save", 1, x=1))
    assert calls == []
    assert cache.contains("0" * 64) is False
    assert calls == ["contains"]  # the spy sees what does go over the wire


def test_version_skew_is_logged_like_stock(make, monkeypatch, caplog):
    monkeypatch.setattr(fleche.remote, "_fleche_version", lambda: "0.0.0-local")
    cache = make()
    with caplog.at_level(logging.WARNING, logger="fleche.remote"):
        remote_version = cache.info()["fleche_version"]
    skew = [r.getMessage() for r in caplog.records if r.name == "fleche.remote"]
    assert skew == [f"fleche version skew: local=0.0.0-local remote={remote_version} "
                    f"— schemas may differ"]


# -- the remote shell command ------------------------------------------------------


def test_remote_stderr_goes_to_the_host_logger(make, caplog):
    cache = make(setup_commands=["echo hello-stderr 1>&2"])
    with caplog.at_level(logging.INFO, logger="fleche.remote.host.testhost"):
        cache.info()
        assert wait_for(lambda: any(
            r.name == "fleche.remote.host.testhost" and r.getMessage() == "hello-stderr"
            for r in caplog.records
        ))


def test_setup_commands_run_in_order_in_workdir(make, remote_dir):
    cache = make(setup_commands=[
        "export FLECHE_SSH_MARK=first",
        'echo "$FLECHE_SSH_MARK" > order.txt',
        "echo second >> order.txt",
    ])
    assert cache.info()["cwd"] == str(remote_dir)
    assert (remote_dir / "order.txt").read_text().split() == ["first", "second"]


def test_a_failing_setup_command_stops_the_rest(make, remote_dir):
    from fleche_ssh.errors import RemoteCommandError

    cache = make(setup_commands=["false", "touch never.txt"])
    with pytest.raises(RemoteCommandError):
        cache.info()
    assert not (remote_dir / "never.txt").exists()


def test_workdir_with_spaces_and_semicolons_stays_inert(make, remote_dir):
    # Unquoted, this would be `cd <remote>/a b; cd <remote>; touch injected && ...`.
    hostile = f"{remote_dir}/a b; cd {remote_dir}; touch injected"
    sshd_helpers.write_remote_workdir(hostile)
    cache = make(workdir=hostile)
    info = cache.info()
    assert info["cwd"] == hostile
    assert cache.save(record("hostile", 1, x=1))
    assert not (remote_dir / "injected").exists()


# -- size and concurrency -----------------------------------------------------------


def test_64_mib_array_round_trips(make):
    cache = make()
    array = np.random.default_rng(0).random(8 << 20)  # 8 Mi float64 = 64 MiB
    assert array.nbytes == 64 << 20
    value_key = digest(array)
    started = time.monotonic()
    key = cache.save(record("big", array))
    saved = time.monotonic()
    loaded = cache.load_value(value_key)
    done = time.monotonic()
    print(f"64 MiB: save {saved - started:.2f} s, load_value {done - saved:.2f} s")
    assert cache.load(key).name == "big"
    assert isinstance(loaded, np.ndarray)
    assert np.array_equal(loaded, array)


@pytest.mark.parametrize("channels", [1, 4])
def test_threads_get_their_own_answers(make, channels, pool):
    cache = make(channels=channels)
    keys = {x: cache.save(record("threads", x * x, x=x)) for x in range(16)}
    values = {x: digest(x * x) for x in keys}
    barrier = threading.Barrier(8)

    def work(worker: int) -> list[tuple[int, bool, int]]:
        barrier.wait(timeout=30)
        out = []
        for x in range(worker, worker + 16):
            x %= 16
            out.append((x, cache.contains(keys[x]), cache.load_value(values[x])))
        return out

    with ThreadPoolExecutor(8) as threads:
        results = [r for part in threads.map(work, range(8)) for r in part]
    assert len(results) == 8 * 16
    assert all(found and value == x * x for x, found, value in results)
    (pooled,) = pool.sessions()
    opened = len(pooled.transport._channels.values())
    assert opened <= channels
    if channels > 1:
        assert opened > 1  # the threads did not all queue behind one server


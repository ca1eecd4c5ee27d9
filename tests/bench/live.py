"""Live reads under load, for scripts/bench: event streams and waiting reads against a running host.

- Idle streams: what N open `GET /api/events/stream` cost Postgres (transactions/s, from
  pg_stat_database) and the host (resident memory), against the same host with none open; the window
  should span at least two of the streams' fallback looks (10 s apart).
- Stream latency: while a writer registers workers at a steady rate, the time from sending each
  write to each stream receiving its event (an upper bound of commit-to-client: the commit happens
  between the two). Every stream must receive every event, in order.
- Waiting reads: K reads held open on K workers with `?wait=30&after_version=v`; each worker is then
  started, and the time from sending the start to the waiting read's answer is measured.

Standard library only: HTTP/1.1 by hand over asyncio streams (the stream is chunked), to 127.0.0.1.
"""

import asyncio
import json
import subprocess
import time


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else None


class Connection:
    """One keep-alive HTTP/1.1 connection for plain requests."""

    def __init__(self, port, token):
        self.port, self.token = port, token

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, method, path, body=None):
        payload = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.writer.write(head.encode() + payload)
        await self.writer.drain()
        status, headers = await read_head(self.reader)
        length = int(headers.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        return status, (json.loads(data) if data else None)

    def close(self):
        self.writer.close()


async def read_head(reader):
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


class Stream:
    """One open event stream; `received` maps each event's subject id to when it arrived."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.received, self.seqs = {}, []
        self.ended = False

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write((f"GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await self.writer.drain()
        status, headers = await read_head(self.reader)
        if status != 200 or headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"stream answered {status} {headers}")
        self.task = asyncio.create_task(self.read())
        return self

    async def read(self):
        pending = b""
        while True:
            size = int((await self.reader.readline()).strip() or b"0", 16)
            if size == 0:
                self.ended = True
                return
            pending += (await self.reader.readexactly(size + 2))[:-2]
            *frames, pending = pending.split(b"\n\n")
            now = time.monotonic()
            for frame in frames:
                data = [line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")]
                if data:
                    event = json.loads(data[0])
                    self.received[event["subject"]["id"]] = now
                    self.seqs.append(event["seq"])

    def close(self):
        self.task.cancel()
        self.writer.close()


def host_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def transactions(database_url):
    """Transactions committed in the app's database so far (each autocommit statement is one)."""
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    out = subprocess.run(["psql", "-Atq", database_url, "-c",
                          f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{name}'"],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


async def measure(port, pid, token, database_url, streams, idle_seconds, writes, rate, waiting_reads):
    baseline_rss = host_rss_kib(pid)
    before, started = transactions(database_url), time.monotonic()
    await asyncio.sleep(idle_seconds)
    no_stream_tps = (transactions(database_url) - before - 1) / (time.monotonic() - started)

    opened = [await Stream(port, token).open() for _ in range(streams)]
    await asyncio.sleep(1)
    before, started = transactions(database_url), time.monotonic()
    await asyncio.sleep(idle_seconds)
    idle_tps = (transactions(database_url) - before - 1) / (time.monotonic() - started)
    streams_rss = host_rss_kib(pid)

    writer = await Connection(port, token).open()
    sent, tag = {}, f"live{int(time.time() * 1000)}"
    for n in range(writes):
        worker = f"{tag}-{n}"
        sent[worker] = time.monotonic()
        status, _ = await writer.request("POST", "/api/supervisor/workers", {"id": worker})
        if status != 201:
            raise RuntimeError(f"register answered {status}")
        await asyncio.sleep(max(0.0, sent[worker] + 1 / rate - time.monotonic()))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(w not in s.received for s in opened for w in sent):
        await asyncio.sleep(0.05)
    latencies = [(s.received[w] - t) * 1000 for s in opened for w, t in sent.items() if w in s.received]
    missing = sum(writes - sum(w in s.received for w in sent) for s in opened)
    ended_early = sum(s.ended for s in opened)
    out_of_order = sum(s.seqs != sorted(set(s.seqs)) for s in opened)
    for stream in opened:
        stream.close()

    waits = []
    if waiting_reads:
        readers = [await Connection(port, token).open() for _ in range(waiting_reads)]
        workers = list(sent)[:waiting_reads]
        versions = [(await writer.request("GET", f"/api/supervisor/workers/{w}"))[1]["version"] for w in workers]
        held = [asyncio.create_task(r.request("GET", f"/api/supervisor/workers/{w}?wait=30&after_version={v}"))
                for r, w, v in zip(readers, workers, versions)]
        await asyncio.sleep(1)
        for worker, read in zip(workers, held):
            started = time.monotonic()
            status, _ = await writer.request("POST", f"/api/supervisor/workers/{worker}/start", {})
            if status != 200:
                raise RuntimeError(f"start answered {status}")
            answer, _ = await read
            if answer != 200:
                raise RuntimeError(f"waiting read answered {answer}")
            waits.append((time.monotonic() - started) * 1000)
            await asyncio.sleep(0.05)
        for reader in readers:
            reader.close()
    writer.close()
    return {
        "streams": streams,
        "postgres_tps_no_streams": round(no_stream_tps, 1),
        "postgres_tps_idle_streams": round(idle_tps, 1),
        "host_rss_mib_no_streams": round(baseline_rss / 1024, 1),
        "host_rss_mib_idle_streams": round(streams_rss / 1024, 1),
        "writes": writes,
        "write_rate": rate,
        "deliveries": len(latencies),
        "missing": missing,
        "streams_out_of_order": out_of_order,
        "streams_ended_early": ended_early,
        "stream_p50_ms": percentile(latencies, 0.5),
        "stream_p99_ms": percentile(latencies, 0.99),
        "stream_max_ms": max(latencies) if latencies else None,
        "waiting_reads": len(waits),
        "wait_p50_ms": percentile(waits, 0.5),
        "wait_p99_ms": percentile(waits, 0.99),
    }


def run(port, pid, token, database_url, streams=100, idle_seconds=5, writes=200, rate=50, waiting_reads=20):
    return asyncio.run(measure(port, pid, token, database_url, streams, idle_seconds, writes, rate, waiting_reads))


def markdown(live):
    def ms(value):
        return "—" if value is None else f"{value:.1f}"
    return [
        "", f"Live reads ({live['streams']} streams open, {live['writes']} writes at {live['write_rate']}/s):",
        "",
        "| measure | value |", "|---|---:|",
        f"| stream: write sent → event received, p50 ms | {ms(live['stream_p50_ms'])} |",
        f"| stream: p99 ms | {ms(live['stream_p99_ms'])} |",
        f"| stream: max ms | {ms(live['stream_max_ms'])} |",
        f"| stream: deliveries / missing / streams out of order | {live['deliveries']} / {live['missing']} / "
        f"{live['streams_out_of_order']} |",
        f"| streams that ended before the run did | {live['streams_ended_early']} |",
        f"| waiting read: change sent → answer, p50 ms ({live['waiting_reads']} reads) | {ms(live['wait_p50_ms'])} |",
        f"| waiting read: p99 ms | {ms(live['wait_p99_ms'])} |",
        f"| Postgres transactions/s, no streams → {live['streams']} idle streams | "
        f"{live['postgres_tps_no_streams']} → {live['postgres_tps_idle_streams']} |",
        f"| host RSS MiB, no streams → {live['streams']} idle streams | "
        f"{live['host_rss_mib_no_streams']} → {live['host_rss_mib_idle_streams']} |",
    ]

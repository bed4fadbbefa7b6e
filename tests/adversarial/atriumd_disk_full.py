#!/usr/bin/env python3
"""atriumd on a full disk (issue 12, defect 14): writes that do not fit are
refused with an error, each acknowledged write survives a restart, the log
says so once per interval with a count (never one line per refused write), and
/metrics counts the refusals. The full disk is --max-database-mb 1, which
SQLite enforces exactly as a full file system (SQLITE_FULL).

    atriumd_disk_full.py path/to/atriumd

Starts its own atriumd on 127.0.0.1 ports it picks and stops it by PID, also
when a check fails. Bounded: at most 3,000 requests and 60 s.
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ATRIUMD = sys.argv[1]
DEADLINE = time.monotonic() + 60


def start(data_dir, log_path):
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [ATRIUMD, "--data-dir", data_dir, "--rest-addr", "127.0.0.1:0", "--xds-addr",
         "127.0.0.1:0", "--tls-addr", "127.0.0.1:0", "--max-database-mb", "1"],
        stdout=log, stderr=log)
    while time.monotonic() < DEADLINE:
        text = open(log_path, encoding="utf-8", errors="replace").read()
        found = re.findall(r"admin REST API listening on 127\.0\.0\.1:(\d+)", text)
        if " ready " in text and found:
            return process, int(found[-1])
        if process.poll() is not None:
            raise SystemExit("atriumd exited at start:\n" + text)
        time.sleep(0.02)
    raise SystemExit("atriumd did not become ready")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main():
    work = tempfile.mkdtemp(prefix="atrium-disk-full-")
    data_dir = os.path.join(work, "data")
    log_path = os.path.join(work, "atriumd.log")
    process = None
    try:
        process, port = start(data_dir, log_path)
        token = open(os.path.join(data_dir, "admin.token")).read().strip()
        headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def call(method, path, body=None):
            connection.request(method, path, body=json.dumps(body) if body is not None else None,
                               headers=headers)
            response = connection.getresponse()
            return response.status, response.read()

        status, _ = call("PUT", "/v1/services/catalog", {})
        assert status in (200, 201), status
        labels = {"key-%02d" % i: "v" * 63 for i in range(16)}  # ~1.3 KB a row
        acknowledged = []
        refused = 0
        first_refusal = None
        for index in range(3000):
            if time.monotonic() > DEADLINE:
                raise SystemExit("out of time while filling the database")
            status, body = call("PUT", "/v1/services/catalog/endpoints/e-%d" % index,
                                {"address": "127.0.0.1", "port": 10000 + index % 50000,
                                 "labels": labels})
            if status in (200, 201):
                acknowledged.append(index)
            else:
                refused += 1
                first_refusal = first_refusal or (status, body)
                if refused >= 200:  # well past the cap: enough refusals to flood a naive log
                    break
        assert refused >= 200, "the 1 MiB cap never refused a write (%d acknowledged)" % len(
            acknowledged)
        status, body = first_refusal
        assert status >= 500, first_refusal
        message = json.loads(body)["error"]["message"]
        assert "full" in message, message
        print("ok   %d writes acknowledged, then refused with %d: %s" % (
            len(acknowledged), status, message))

        # The log says it once per second with a count, whatever the number of refusals.
        time.sleep(1.2)  # one maintenance interval, so the count is logged
        lines = [line for line in open(log_path, encoding="utf-8", errors="replace")
                 if "is full" in line]
        assert 1 <= len(lines) <= 5, "%d disk-full log lines for %d refusals" % (len(lines), refused)
        counts = [int(n) for line in lines for n in re.findall(r": (\d+) writes? refused", line)]
        assert sum(counts) >= refused, (counts, refused)
        print("ok   %d log line(s) for %d refusals: %s" % (len(lines), refused, lines[0].strip()))

        connection.request("GET", "/metrics", headers=headers)
        metrics = connection.getresponse().read().decode()
        total = int(re.search(r"^atrium_store_disk_full_total (\d+)$", metrics, re.M).group(1))
        assert total >= refused, (total, refused)
        print("ok   atrium_store_disk_full_total %d" % total)
        connection.close()

        # Every acknowledged write survives a restart; nothing refused was stored.
        stop(process)
        process, port = start(data_dir, os.path.join(work, "restarted.log"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        status, body = call("GET", "/v1/services/catalog/endpoints")
        assert status == 200, status
        items = json.loads(body)
        items = items.get("items", items.get("endpoints", items)) if isinstance(items, dict) else items
        stored = sorted(int(item["id"].split("-")[1]) for item in items)
        assert stored == sorted(acknowledged), (len(stored), len(acknowledged))
        print("ok   after a restart: the %d acknowledged endpoints, no other" % len(stored))
        connection.close()
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

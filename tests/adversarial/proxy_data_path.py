#!/usr/bin/python3
"""tests/adversarial/proxy_data_path.py — atrium-proxy's data path against
clients and neighbours that misbehave (issue 12, defects 1, 5, 6, 10, 11 and
the absolute-form part of 14). Real atriumd, atrium-proxy processes and
Python backends (tests/integration/proxy/backend.py), all on 127.0.0.1:

    proxy_data_path.py ATRIUMD ATRIUM_PROXY ATRIUMCTL

  1. a second atrium-proxy asking for the first one's outbound port: its
     Listener response is NACKed ("Address already in use") and every
     connection to the port still reaches the first proxy;
  5. out of file descriptors (a proxy started with RLIMIT_NOFILE 128:128 and
     300 connections opened to it): CPU time and log stay small, the
     counter atrium_proxy_downstream_accept_fd_exhausted_total moves, and
     once the connections close the proxy serves again;
  6. a half-sent request head gets 408 within the request-head timeout; an
     idle connection is closed after the idle timeout, a connection in use
     is not; a stalled upload gets 408 after the idle timeout;
 10. an upload slower than its route's timeout, whose body keeps moving,
     is answered 200, not 504;
 11. clients that abort their uploads (FIN or RST) release the upstream
     connections at once;
 14. an absolute-form target reaches the backend in origin form with the
     URI's authority as its only Host.

Reuses the integration test's Mesh (tests/integration/proxy_test.py). Every
wait is bounded; every load loop is bounded in count and time; every process
is started here and stopped by its Popen object, also on failure. Prints
PASS/FAIL per check and the logs when one failed; exits 1 when any did.
"""

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import proxy_test  # noqa: E402
from proxy_test import (Failure, Mesh, RawConnection, check, free_ports, metric,  # noqa: E402
                        parse_prometheus, request_bytes, wait_until)

HEAD_TIMEOUT_MS = 1000
IDLE_TIMEOUT_MS = 4000
ROUTE_TIMEOUT_MS = 1000
FD_LIMIT = 128


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line_count(path):
    with open(path, "rb") as log:
        return sum(1 for _ in log)


class Proxy:
    """One atrium-proxy of this test, on its own ports."""

    def __init__(self, mesh, node, app_port, outbound_port=None, args=(), fd_limit=None):
        self.mesh = mesh
        self.node = node
        ports = free_ports(3)
        self.outbound_port = outbound_port or ports[0]
        self.inbound_port = free_ports(1, "0.0.0.0")[0]
        self.admin_port = ports[2]
        self.log_path = os.path.join(mesh.work, "%s.log" % node)
        state_dir = os.path.join(mesh.work, node + "-state")
        os.makedirs(state_dir, exist_ok=True)
        command = [mesh.proxy_path, "--service", "web", "--app-port", str(app_port),
                   "--node", node, "--xds", "127.0.0.1:%d" % mesh.xds_port,
                   "--outbound-port", str(self.outbound_port),
                   "--inbound-port", str(self.inbound_port),
                   "--admin-port", str(self.admin_port), "--state-dir", state_dir] + list(args)

        def limit_files():
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=mesh.work, env=mesh.proxy_env,
                preexec_fn=limit_files if fd_limit else None)
        mesh.processes.append(self.process)
        mesh.logs.append((node, self.log_path))

    def admin(self, path):
        connection = proxy_test.http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                                           timeout=proxy_test.HTTP_TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def stats(self):
        status, text = self.admin("/stats")
        check(status == 200, "/stats of %s answered %d" % (self.node, status))
        return parse_prometheus(text)

    def request(self, host, path="/", timeout=proxy_test.HTTP_TIMEOUT):
        connection = RawConnection(self.outbound_port, timeout)
        try:
            connection.send(request_bytes("GET", path, host))
            return connection.read_final_response()[0]
        finally:
            connection.close()

    def wait_serving(self, host, timeout=30.0):
        def serving():
            check(self.process.poll() is None, "%s exited with status %s (log %s)"
                  % (self.node, self.process.returncode, self.log_path))
            return self.request(host).status == 200
        try:
            ok = wait_until(serving, timeout, 0.1)
        except Failure:
            raise
        check(self.process.poll() is None, "%s exited with status %s (log %s)"
              % (self.node, self.process.returncode, self.log_path))
        if not ok:
            try:
                with open(self.log_path, encoding="utf-8", errors="replace") as log:
                    tail = "".join(log.readlines()[-15:])
            except OSError as error:
                tail = str(error)
            last = None
            try:
                last = self.request(host)
            except Exception as error:  # noqa: BLE001 - shown as it is
                last = error
            try:
                clusters = self.admin("/clusters")[1]
            except Exception as error:  # noqa: BLE001 - shown as it is
                clusters = str(error)
            check(False, "%s did not serve %s within %d s (last answer: %r); its log ends:\n%s"
                  "\n/clusters:\n%s\natriumd's view:\n%s"
                  % (self.node, host, timeout, last, tail, clusters[:3000],
                     json.dumps(self.mesh.api("GET", "/v1/proxies"), indent=1)[:3000]))


class DataPathTest:
    def __init__(self, mesh):
        self.mesh = mesh
        self.results = []

    def setup(self):
        mesh = self.mesh
        self.echo = mesh.backend("a")
        self.app = mesh.backend("app")
        mesh.start_atriumd()
        mesh.api("PUT", "/v1/services/web", {"protocol": "http"})
        mesh.put_endpoint("web", "web-1", self.app.port)
        mesh.api("PUT", "/v1/services/echo", {"protocol": "http"})
        mesh.put_endpoint("echo", "a", self.echo.port)
        mesh.api("PUT", "/v1/services/upload", {"protocol": "http"})
        mesh.put_endpoint("upload", "u", self.echo.port)
        mesh.api("PUT", "/v1/services/upload/routes",
                 {"rules": [{"timeout_ms": ROUTE_TIMEOUT_MS}]})
        args = ["--workers", "2"]
        # A binary from before the timeouts (to see these checks fail) has no such flags.
        usage = subprocess.run([mesh.proxy_path, "--help"], capture_output=True, text=True,
                               timeout=30).stdout
        if "--idle-timeout-ms" in usage:
            args += ["--request-head-timeout-ms", str(HEAD_TIMEOUT_MS),
                     "--idle-timeout-ms", str(IDLE_TIMEOUT_MS)]
        else:
            print("note: %s has no --idle-timeout-ms: started without the timeouts"
                  % mesh.proxy_path)
        self.proxy = Proxy(mesh, "adv-main", self.app.port, args=args)
        self.proxy.wait_serving("echo")
        self.proxy.wait_serving("upload")

    def raw(self, timeout=proxy_test.HTTP_TIMEOUT):
        return RawConnection(self.proxy.outbound_port, timeout)

    # -- defect 1 --

    def test_port_not_shared(self):
        """A second proxy on the same outbound port is refused the port."""
        mesh = self.mesh
        second = Proxy(mesh, "adv-second", self.app.port, outbound_port=self.proxy.outbound_port)
        try:
            def nacked():
                for proxy in mesh.api("GET", "/v1/proxies")["proxies"]:
                    if proxy["node_id"] == second.node:
                        for entry in proxy["types"]:
                            if "cannot bind" in (entry.get("nack_message") or ""):
                                return entry["nack_message"]
                return None
            message = wait_until(nacked, proxy_test.PROPAGATION_TIMEOUT, 0.1)
            check(message, "the second proxy's listeners were not NACKed within %d s: it "
                  "shares port %d" % (proxy_test.PROPAGATION_TIMEOUT, self.proxy.outbound_port))
            check("outbound" in message and "127.0.0.1:%d" % self.proxy.outbound_port in message
                  and "Address already in use" in message,
                  "the NACK does not name the listener, address and reason: %r" % message)
            statuses = [self.proxy.request("echo", "/shared/%d" % i).status for i in range(20)]
            check(statuses == [200] * 20, "20 requests to the port answered %s" % statuses)
            taken = metric(second.stats(), "atrium_proxy_downstream_connections_total")
            check(taken == 0, "the second proxy accepted %g connections on the first one's port"
                  % taken)
            return message
        finally:
            mesh.stop(second.process)

    # -- defect 6 --

    def test_request_head_timeout(self):
        before = self.proxy.stats()
        connection = self.raw(timeout=HEAD_TIMEOUT_MS / 1000.0 + 5)
        started = time.monotonic()
        try:
            connection.send(b"GET /slow-head HTTP/1.1\r\nHost: echo\r\nX-Part: 1\r\n")
            try:
                response = connection.read_response()
            except (Failure, EOFError) as error:
                raise Failure("no 408 for a half-sent head within %.1f s: %s"
                              % (time.monotonic() - started, error))
            elapsed = time.monotonic() - started
            check(response.status == 408, "a half-sent head got %r" % response)
            check(connection.closed_by_peer(5.0), "the connection stayed open after the 408")
        finally:
            connection.close()
        check(elapsed >= HEAD_TIMEOUT_MS / 1000.0 * 0.9,
              "the 408 came after %.2f s, before the %d ms timeout" % (elapsed, HEAD_TIMEOUT_MS))
        after = self.proxy.stats()
        grown = (metric(after, "atrium_proxy_downstream_request_head_timeouts_total") -
                 metric(before, "atrium_proxy_downstream_request_head_timeouts_total"))
        check(grown == 1, "atrium_proxy_downstream_request_head_timeouts_total grew by %g" % grown)
        replies = (metric(after, "atrium_proxy_local_replies_total",
                          reason="request_head_timeout") -
                   metric(before, "atrium_proxy_local_replies_total",
                          reason="request_head_timeout"))
        check(replies == 1, "local_replies_total{reason=\"request_head_timeout\"} grew by %g"
              % replies)
        return "408 after %.2f s" % elapsed

    def test_idle_timeout(self):
        before = self.proxy.stats()
        idle = self.raw(timeout=IDLE_TIMEOUT_MS / 1000.0 + 5)
        busy = self.raw()
        started = time.monotonic()
        try:
            # busy sends a request every 0.5 s for 1.5 idle timeouts: it stays open.
            served = 0
            closed_at = None
            while time.monotonic() - started < IDLE_TIMEOUT_MS / 1000.0 * 1.5:
                busy.send(request_bytes("GET", "/busy/%d" % served, "echo"))
                response, _ = busy.read_final_response()
                check(response.status == 200, "request %d on the busy connection: %r"
                      % (served, response))
                served += 1
                if closed_at is None:  # waits up to 0.5 s for the close
                    if idle.closed_by_peer(0.5):
                        closed_at = time.monotonic() - started
                else:
                    time.sleep(0.5)  # pacing the busy connection's requests
            if closed_at is None:
                check(idle.closed_by_peer(IDLE_TIMEOUT_MS / 1000.0 + 2),
                      "an idle connection stayed open %.1f s with a %d ms idle timeout"
                      % (time.monotonic() - started, IDLE_TIMEOUT_MS))
                closed_at = time.monotonic() - started
        finally:
            idle.close()
            busy.close()
        check(closed_at >= IDLE_TIMEOUT_MS / 1000.0 * 0.9,
              "the idle connection was closed after %.2f s, before the %d ms timeout"
              % (closed_at, IDLE_TIMEOUT_MS))
        grown = (metric(self.proxy.stats(), "atrium_proxy_downstream_idle_timeouts_total") -
                 metric(before, "atrium_proxy_downstream_idle_timeouts_total"))
        check(grown >= 1, "atrium_proxy_downstream_idle_timeouts_total did not grow")
        return "idle connection closed after %.2f s; %d requests on the busy one" % (
            closed_at, served)

    def test_stalled_upload(self):
        """An upload whose body stops: 408 after the idle timeout, upstream released."""
        before = self.proxy.stats()
        connection = self.raw(timeout=IDLE_TIMEOUT_MS / 1000.0 + 5)
        started = time.monotonic()
        try:
            connection.send(request_bytes("PUT", "/stalled", "echo",
                                          headers=[("Content-Length", "100000")]) + b"x" * 1000)
            try:
                response = connection.read_response()
            except (Failure, EOFError) as error:
                raise Failure("no answer to a stalled upload within %.1f s: %s"
                              % (time.monotonic() - started, error))
            elapsed = time.monotonic() - started
        finally:
            connection.close()
        check(response.status == 408, "a stalled upload got %r" % response)
        check(elapsed >= IDLE_TIMEOUT_MS / 1000.0 * 0.9, "the 408 came after %.2f s" % elapsed)
        replies = (metric(self.proxy.stats(), "atrium_proxy_local_replies_total",
                          reason="idle_timeout") -
                   metric(before, "atrium_proxy_local_replies_total", reason="idle_timeout"))
        check(replies == 1, "local_replies_total{reason=\"idle_timeout\"} grew by %g" % replies)
        return "408 after %.2f s" % elapsed

    # -- defect 10 --

    def test_slow_upload_beyond_route_timeout(self):
        pieces, size = 10, 20000
        duration = ROUTE_TIMEOUT_MS / 1000.0 * 2.5
        connection = self.raw()
        started = time.monotonic()
        try:
            connection.send(request_bytes("PUT", "/slow-upload", "upload",
                                          headers=[("Content-Length", str(pieces * size))]))
            for i in range(pieces):
                # Paced by the clock, not by fixed sleeps: piece i leaves at i/pieces of duration.
                due = started + duration * (i + 1) / pieces
                while time.monotonic() < due:
                    time.sleep(min(0.05, max(0.0, due - time.monotonic())))
                connection.send(b"u" * size)
            response, _ = connection.read_final_response()
        finally:
            connection.close()
        elapsed = time.monotonic() - started
        check(response.status == 200, "an upload taking %.1f s with a %d ms route timeout got %r"
              % (elapsed, ROUTE_TIMEOUT_MS, response))
        answer = response.json()
        check(answer["body_length"] == pieces * size,
              "the backend got %d of %d bytes" % (answer["body_length"], pieces * size))
        # The route timeout still bounds the wait for the response.
        connection = self.raw()
        try:
            connection.send(request_bytes("PUT", "/sleep/3000", "upload", body=b"done"))
            late, _ = connection.read_final_response()
        finally:
            connection.close()
        check(late.status == 504, "a response slower than the route timeout got %r" % late)
        return "200 after %.1f s of upload; a 3 s response still 504" % elapsed

    # -- defect 11 --

    def test_aborted_uploads(self):
        proxy = self.proxy
        settled = lambda: metric(proxy.stats(), "atrium_proxy_downstream_connections_active") == 0
        check(wait_until(settled, 10.0, 0.05), "client connections of earlier checks stay open")
        before = metric(proxy.stats(), "atrium_proxy_upstream_connections_active")
        aborted = 50
        deadline = time.monotonic() + 20.0
        for i in range(aborted):
            check(time.monotonic() < deadline, "opening the aborted uploads took over 20 s")
            sock = socket.create_connection(("127.0.0.1", proxy.outbound_port), timeout=5)
            try:
                sock.sendall(request_bytes("PUT", "/aborted/%d" % i, "echo",
                                           headers=[("Content-Length", "1000000")]) +
                             b"y" * (100 if i % 2 else 30000))
                if i % 4 == 3:  # a reset instead of a close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                sock.close()
        started = time.monotonic()

        def released():
            values = proxy.stats()
            return (metric(values, "atrium_proxy_downstream_connections_active") == 0 and
                    metric(values, "atrium_proxy_upstream_connections_active") <= before)
        ok = wait_until(released, 2.0, 0.05)
        values = proxy.stats()
        check(ok, "%.1f s after %d aborted uploads the proxy still holds %g client and %g "
              "upstream connections (%g before)" % (
                  time.monotonic() - started, aborted,
                  metric(values, "atrium_proxy_downstream_connections_active"),
                  metric(values, "atrium_proxy_upstream_connections_active"), before))
        check(proxy.request("echo", "/after-aborts").status == 200,
              "echo does not answer after the aborted uploads")
        return "released within %.2f s" % (time.monotonic() - started)

    # -- defect 14 --

    def test_absolute_form(self):
        connection = self.raw()
        try:
            connection.send(b"GET http://echo/absolute/x?y=1 HTTP/1.1\r\nHost: other.example\r\n"
                            b"\r\n")
            response, _ = connection.read_final_response()
            check(response.status == 200, "an absolute-form request got %r" % response)
            answer = response.json()
            connection.send(b"GET http://echo HTTP/1.1\r\nHost: echo\r\n\r\n")
            bare, _ = connection.read_final_response()
        finally:
            connection.close()
        check(answer["path"] == "/absolute/x?y=1",
              "the backend saw the target %r, not the origin form" % answer["path"])
        hosts = [value for name, value in answer["header_list"] if name.lower() == "host"]
        check(hosts == ["echo"], "the backend saw Host %s, expected only the URI's authority"
              % hosts)
        check(bare.status == 200 and bare.json()["path"] == "/",
              "http://echo (no path) reached the backend as %r" % bare)
        return "forwarded as GET /absolute/x?y=1 with Host: echo"

    # -- defect 5 --

    def test_out_of_file_descriptors(self):
        mesh = self.mesh
        proxy = Proxy(mesh, "adv-fd", self.app.port, args=["--workers", "1"], fd_limit=FD_LIMIT)
        sockets = []
        try:
            proxy.wait_serving("echo")
            before = proxy.stats()
            lines_before = line_count(proxy.log_path)
            deadline = time.monotonic() + 20.0
            for _ in range(300):  # more than the proxy's descriptors, bounded in time
                if time.monotonic() > deadline:
                    break
                try:
                    sockets.append(socket.create_connection(("127.0.0.1", proxy.outbound_port),
                                                            timeout=2))
                except OSError:
                    break
            check(len(sockets) > FD_LIMIT, "only %d connections could be opened" % len(sockets))
            # Two seconds out of descriptors: measured, not waited for.
            cpu_start = cpu_seconds(proxy.process.pid)
            window_start = time.monotonic()
            while time.monotonic() - window_start < 2.0:
                check(proxy.process.poll() is None, "the proxy exited out of descriptors")
                time.sleep(0.1)
            window = time.monotonic() - window_start
            cpu = cpu_seconds(proxy.process.pid) - cpu_start
            lines = line_count(proxy.log_path) - lines_before
            held = len(sockets)
            for sock in sockets:
                sock.close()
            sockets = []
            check(cpu < 0.3 * window, "out of descriptors the proxy used %.2f s of CPU in %.1f s"
                  % (cpu, window))
            check(lines <= 10, "out of descriptors the proxy logged %d lines in %.1f s"
                  % (lines, window))
            proxy.wait_serving("echo", 15.0)
            after = proxy.stats()
            failures = (metric(after, "atrium_proxy_downstream_accept_fd_exhausted_total") -
                        metric(before, "atrium_proxy_downstream_accept_fd_exhausted_total"))
            check(failures >= 1, "atrium_proxy_downstream_accept_fd_exhausted_total did not move")
            return "%d connections held: %.2f s CPU in %.1f s, %d log lines, %d accept failures "\
                   "counted, serving again after" % (held, cpu, window, lines, failures)
        finally:
            for sock in sockets:
                sock.close()
            mesh.stop(proxy.process)

    def test_clean_shutdown(self):
        status = self.mesh.stop(self.proxy.process)
        check(status == 0, "the proxy exited %s on SIGTERM, expected 0" % status)
        reports = []
        for title, path in self.mesh.logs:
            with open(path, errors="replace") as log:
                reports += ["%s: %s" % (title, line.strip()) for line in log
                            if proxy_test.SANITIZER_RE.search(line)]
        check(not reports, "sanitizer reports:\n  " + "\n  ".join(reports[:20]))

    def run(self):
        tests = [
            ("1: a second proxy cannot share the outbound port (NACKed, no connection taken)",
             self.test_port_not_shared),
            ("6: a half-sent request head gets 408 after the request-head timeout",
             self.test_request_head_timeout),
            ("6: an idle connection closes after the idle timeout, a busy one stays",
             self.test_idle_timeout),
            ("6: a stalled upload gets 408 after the idle timeout", self.test_stalled_upload),
            ("10: an upload slower than the route timeout is answered 200",
             self.test_slow_upload_beyond_route_timeout),
            ("11: aborted uploads release their upstream connections at once",
             self.test_aborted_uploads),
            ("14: an absolute-form target is forwarded in origin form with its authority",
             self.test_absolute_form),
            ("5: out of file descriptors: no busy loop, no log flood, counted, recovers",
             self.test_out_of_file_descriptors),
            ("the proxy stops cleanly, no sanitizer report", self.test_clean_shutdown),
        ]
        started = time.monotonic()
        setup_error = None
        try:
            self.setup()
        except Exception as error:  # noqa: BLE001
            setup_error = "setup failed: %s\n%s" % (error, traceback.format_exc())
        for name, function in tests:
            if setup_error is not None:
                self.results.append((name, False))
                print("FAIL %s: %s" % (name, setup_error))
                continue
            began = time.monotonic()
            try:
                note = function()
                self.results.append((name, True))
                print("PASS %s (%.1f s)%s" % (name, time.monotonic() - began,
                                              ": " + note if note else ""))
            except Failure as failure:
                self.results.append((name, False))
                print("FAIL %s: %s" % (name, failure))
            except Exception as error:  # noqa: BLE001 - a crash is a failure too
                self.results.append((name, False))
                print("FAIL %s: %r\n%s" % (name, error, traceback.format_exc()))
            sys.stdout.flush()
        failed = [name for name, passed in self.results if not passed]
        print("%d passed, %d failed (%.1f s)" % (len(self.results) - len(failed), len(failed),
                                                 time.monotonic() - started))
        return failed


def main(argv):
    if len(argv) != 4:
        print("usage: proxy_data_path.py ATRIUMD ATRIUM_PROXY ATRIUMCTL", file=sys.stderr)
        return 2
    mesh = Mesh(argv[1], argv[2], argv[3])
    proxy_test.signal.signal(proxy_test.signal.SIGTERM, lambda signum, frame: sys.exit(1))
    try:
        failed = DataPathTest(mesh).run()
        if failed:
            mesh.print_logs(100)
        return 1 if failed else 0
    finally:
        mesh.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

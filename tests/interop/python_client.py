#!/usr/bin/python3
"""Proxyless gRPC client (Debian's python3-grpcio) against atriumd's xDS.

Usage: python_client.py --reconfigure PROGRAM [--target xds:///greeter]
                        [--settle-seconds 2]

GRPC_XDS_BOOTSTRAP must name a bootstrap file pointing at atriumd. The mesh
is set up by run_interop.sh: service "greeter" with endpoint g1 (backend "v1",
version v1) and g2 (backend "v2", version v2), routed 80/20 between the v1 and
v2 subsets. Checks:

  1. 1,000 RPCs all succeed and the v1 share is 80% +-5 points.
  2. PROGRAM is run (it registers g3, version v2, on backend "v2b", then deletes
     endpoint g2); SETTLE seconds later, of 200 RPCs none reaches "v2" and at
     least 130 reach "v1" (expected 160 +-5.7).
  3. In those same 200 RPCs the v2 subset is served by its new endpoint: at
     least 10 reach "v2b" (expected 40 +-5.7); and no RPC fails, neither those
     nor the ones sent during the SETTLE seconds.

The client keeps sending RPCs (one every 5 ms) during the SETTLE seconds, as
a client in service would. This matters: grpcio's synchronous API only reads
its sockets, the xDS stream included, while some thread polls, i.e. while an
RPC is in flight; an idle client leaves atriumd's update unread in the socket
(verified: Recv-Q 255 bytes on the xDS connection 1 s after the delete) and
sends its next RPC with the old endpoints.

Prints the counts, then "N passed, M failed"; exits 0 only if all passed.
"""
import argparse
import collections
import os
import subprocess
import sys
import time

import grpc

METHOD = '/greeter.Greeter/SayHello'
PHASE1_RPCS = 1000
PHASE2_RPCS = 200
RPC_TIMEOUT_S = 5
WARMUP_TIMEOUT_S = 10
SETTLE_INTERVAL_S = 0.005


def log(msg):
    sys.stdout.write('[python] %s\n' % msg)
    sys.stdout.flush()


def run_rpcs(say_hello, n):
    """n sequential RPCs; returns (responses by backend name, errors by code)."""
    served = collections.Counter()
    errors = collections.Counter()
    for _ in range(n):
        try:
            reply = say_hello(b'hi', timeout=RPC_TIMEOUT_S)
            served[reply.decode(errors='replace')] += 1
        except grpc.RpcError as e:
            errors['%s: %s' % (e.code().name, e.details())] += 1
    return served, errors


def fmt(counter):
    return '{' + ', '.join('%r: %d' % kv for kv in sorted(counter.items())) + '}'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--target', default='xds:///greeter')
    ap.add_argument('--reconfigure', required=True,
                    help='program run (no arguments) between the two phases')
    ap.add_argument('--settle-seconds', type=float, default=2.0)
    args = ap.parse_args()
    if not os.environ.get('GRPC_XDS_BOOTSTRAP'):
        log('GRPC_XDS_BOOTSTRAP is not set')
        return 2

    passed = failed = 0

    def check(name, ok, detail):
        nonlocal passed, failed
        if ok:
            passed += 1
            log('ok   %s (%s)' % (name, detail))
        else:
            failed += 1
            log('FAIL %s (%s)' % (name, detail))

    log('grpcio %s, target %s' % (grpc.__version__, args.target))
    channel = grpc.insecure_channel(args.target)
    say_hello = channel.unary_unary(METHOD)  # no serializers: raw bytes

    # The first RPC waits for the xDS resources (LDS, RDS, CDS, EDS).
    t0 = time.monotonic()
    try:
        first = say_hello(b'hi', timeout=WARMUP_TIMEOUT_S, wait_for_ready=True)
    except grpc.RpcError as e:
        log('FAIL first RPC through xDS: %s: %s' % (e.code().name, e.details()))
        log('0 passed, 1 failed')
        return 1
    log('first RPC answered by %r after %.2f s' % (first.decode(errors='replace'),
                                                  time.monotonic() - t0))

    # 1. The 80/20 weighted split.
    served, errors = run_rpcs(say_hello, PHASE1_RPCS)
    total_ok = sum(served.values())
    v1_share = 100.0 * served['v1'] / PHASE1_RPCS
    log('phase 1: %d RPCs: responses %s, errors %s' % (PHASE1_RPCS, fmt(served), fmt(errors)))
    check('80/20 split between subsets v1 and v2',
          not errors and total_ok == served['v1'] + served['v2'] and 75.0 <= v1_share <= 85.0,
          'v1 %.1f%% of %d RPCs, expected 80 +-5; %d errors' % (v1_share, PHASE1_RPCS,
                                                               sum(errors.values())))

    # 2. and 3. Deregister g2 (after registering g3 in the same subset).
    log('running: %s' % args.reconfigure)
    rc = subprocess.run([args.reconfigure], timeout=20).returncode
    if rc != 0:
        log('FAIL %s exited %d' % (args.reconfigure, rc))
        failed += 2
        log('%d passed, %d failed' % (passed, failed))
        return 1
    log('%.1f s of traffic (an RPC every %d ms) for the change to reach the client'
        % (args.settle_seconds, SETTLE_INTERVAL_S * 1000))
    settle_served = collections.Counter()
    settle_errors = collections.Counter()
    settle_end = time.monotonic() + args.settle_seconds
    while time.monotonic() < settle_end:
        s, e = run_rpcs(say_hello, 1)
        settle_served.update(s)
        settle_errors.update(e)
        time.sleep(SETTLE_INTERVAL_S)
    log('during the %.1f s: responses %s, errors %s'
        % (args.settle_seconds, fmt(settle_served), fmt(settle_errors)))

    served, errors = run_rpcs(say_hello, PHASE2_RPCS)
    log('phase 2: %d RPCs: responses %s, errors %s' % (PHASE2_RPCS, fmt(served), fmt(errors)))
    check('no RPC reaches deregistered endpoint g2 %.0f s after its deletion' % args.settle_seconds,
          served['v2'] == 0 and served['v1'] >= 130,
          '%d responses from v2 (expected 0), %d from v1 (expected >= 130)'
          % (served['v2'], served['v1']))
    check('v2 subset served by its new endpoint g3, no RPC failed during the switch',
          served['v2b'] >= 10 and not errors and not settle_errors,
          '%d responses from v2b (expected >= 10), %d errors, %d during the %.1f s (expected 0)'
          % (served['v2b'], sum(errors.values()), sum(settle_errors.values()),
             args.settle_seconds))

    channel.close()
    log('%d passed, %d failed' % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())

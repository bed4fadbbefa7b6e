#!/usr/bin/python3
"""A greeter backend for the xDS interop tests; needs no .proto.

Usage: greeter_backend.py NAME

Serves the unary method /greeter.Greeter/SayHello on 127.0.0.1 on a free port
and answers every call with NAME as raw bytes, so a client can tell which
backend served it. Prints "PORT <n>" on standard output once it is serving,
then runs until SIGTERM or SIGINT, when it logs how many calls it served.

Run it with Debian's /usr/bin/python3 (python3-grpcio).
"""
import signal
import sys
import threading
from concurrent import futures

import grpc

METHOD = '/greeter.Greeter/SayHello'


class Greeter(grpc.GenericRpcHandler):
    def __init__(self, name):
        self._reply = name.encode()
        self._handler = grpc.unary_unary_rpc_method_handler(self._say_hello)
        self._lock = threading.Lock()
        self.calls = 0

    def _say_hello(self, request, context):
        with self._lock:
            self.calls += 1
        return self._reply

    def service(self, handler_call_details):
        if handler_call_details.method == METHOD:
            return self._handler
        return None


def main():
    if len(sys.argv) != 2 or not sys.argv[1]:
        sys.stderr.write('usage: greeter_backend.py NAME\n')
        return 2
    name = sys.argv[1]
    greeter = Greeter(name)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), handlers=(greeter,))
    port = server.add_insecure_port('127.0.0.1:0')
    if port == 0:
        sys.stderr.write('greeter %s: could not bind 127.0.0.1\n' % name)
        return 1
    server.start()

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sys.stdout.write('PORT %d\n' % port)
    sys.stdout.flush()
    sys.stderr.write('greeter %s serving on 127.0.0.1:%d\n' % (name, port))
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    server.stop(grace=0.5).wait()
    sys.stderr.write('greeter %s: stopped after %d calls\n' % (name, greeter.calls))
    return 0


if __name__ == '__main__':
    sys.exit(main())

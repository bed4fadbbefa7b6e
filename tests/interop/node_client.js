#!/usr/bin/env node
// Proxyless gRPC client (@grpc/grpc-js + @grpc/grpc-js-xds) against atriumd's xDS.
//
// Usage: node node_client.js --reconfigure PROGRAM [--target xds:///greeter]
//                            [--settle-seconds 2]
//
// GRPC_XDS_BOOTSTRAP must name a bootstrap file pointing at atriumd. The same
// three checks as python_client.py (see there): the 80/20 split over 1,000
// RPCs; no RPC reaches deregistered endpoint g2 2 s after its deletion; the v2
// subset is then served by its new endpoint g3, and no RPC fails during the
// switch. As there, RPCs keep flowing (one every 5 ms) during the 2 s. Prints
// the counts, then "N passed, M failed"; exits 0 only if all passed.
'use strict';

const childProcess = require('child_process');

let grpc, grpcXds;
try {
  grpc = require('@grpc/grpc-js');
  grpcXds = require('@grpc/grpc-js-xds');
} catch (e) {
  console.error(`[node] cannot load @grpc/grpc-js / @grpc/grpc-js-xds (${e.message}); run scripts/setup.sh`);
  process.exit(2);
}

const METHOD = '/greeter.Greeter/SayHello';
const PHASE1_RPCS = 1000;
const PHASE2_RPCS = 200;
const RPC_TIMEOUT_MS = 5000;
const WARMUP_TIMEOUT_MS = 10000;
const SETTLE_INTERVAL_MS = 5;

function log(msg) {
  process.stdout.write(`[node] ${msg}\n`);
}

function parseArgs(argv) {
  const args = {target: 'xds:///greeter', reconfigure: null, settleSeconds: 2};
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--target': args.target = value; i++; break;
      case '--reconfigure': args.reconfigure = value; i++; break;
      case '--settle-seconds': args.settleSeconds = Number(value); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!args.reconfigure) throw new Error('--reconfigure PROGRAM is required');
  return args;
}

const identity = (x) => x; // raw bytes: no serializers

function sayHello(client, timeoutMs, waitForReady) {
  return new Promise((resolve) => {
    const metadata = new grpc.Metadata(waitForReady ? {waitForReady: true} : undefined);
    client.makeUnaryRequest(METHOD, identity, identity, Buffer.from('hi'), metadata,
      {deadline: Date.now() + timeoutMs},
      (err, reply) => {
        if (err) {
          resolve({error: `${grpc.status[err.code] || err.code}: ${err.details}`});
        } else {
          resolve({name: reply.toString()});
        }
      });
  });
}

async function runRpcs(client, n) {
  const served = {};
  const errors = {};
  for (let i = 0; i < n; i++) {
    const r = await sayHello(client, RPC_TIMEOUT_MS, false);
    if (r.error !== undefined) errors[r.error] = (errors[r.error] || 0) + 1;
    else served[r.name] = (served[r.name] || 0) + 1;
  }
  return {served, errors};
}

const count = (counter, key) => counter[key] || 0;
const total = (counter) => Object.values(counter).reduce((a, b) => a + b, 0);
const fmt = (counter) => '{' + Object.keys(counter).sort()
  .map((k) => `'${k}': ${counter[k]}`).join(', ') + '}';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!process.env.GRPC_XDS_BOOTSTRAP) {
    log('GRPC_XDS_BOOTSTRAP is not set');
    return 2;
  }
  grpcXds.register();

  let passed = 0;
  let failed = 0;
  const check = (name, ok, detail) => {
    if (ok) { passed++; log(`ok   ${name} (${detail})`); }
    else { failed++; log(`FAIL ${name} (${detail})`); }
  };

  const xdsVersion = require('@grpc/grpc-js-xds/package.json').version;
  const grpcVersion = require('@grpc/grpc-js/package.json').version;
  log(`@grpc/grpc-js ${grpcVersion}, @grpc/grpc-js-xds ${xdsVersion}, target ${args.target}`);
  const client = new grpc.Client(args.target, grpc.credentials.createInsecure());

  // The first RPC waits for the xDS resources (LDS, RDS, CDS, EDS).
  const t0 = Date.now();
  const first = await sayHello(client, WARMUP_TIMEOUT_MS, true);
  if (first.error !== undefined) {
    log(`FAIL first RPC through xDS: ${first.error}`);
    log('0 passed, 1 failed');
    return 1;
  }
  log(`first RPC answered by '${first.name}' after ${((Date.now() - t0) / 1000).toFixed(2)} s`);

  // 1. The 80/20 weighted split.
  let {served, errors} = await runRpcs(client, PHASE1_RPCS);
  const v1Share = 100 * count(served, 'v1') / PHASE1_RPCS;
  log(`phase 1: ${PHASE1_RPCS} RPCs: responses ${fmt(served)}, errors ${fmt(errors)}`);
  check('80/20 split between subsets v1 and v2',
    total(errors) === 0 && total(served) === count(served, 'v1') + count(served, 'v2') &&
      v1Share >= 75 && v1Share <= 85,
    `v1 ${v1Share.toFixed(1)}% of ${PHASE1_RPCS} RPCs, expected 80 +-5; ${total(errors)} errors`);

  // 2. and 3. Deregister g2 (after registering g3 in the same subset).
  log(`running: ${args.reconfigure}`);
  try {
    childProcess.execFileSync(args.reconfigure, [], {stdio: 'inherit', timeout: 20000});
  } catch (e) {
    log(`FAIL ${args.reconfigure}: ${e.message}`);
    failed += 2;
    log(`${passed} passed, ${failed} failed`);
    return 1;
  }
  log(`${args.settleSeconds.toFixed(1)} s of traffic (an RPC every ${SETTLE_INTERVAL_MS} ms) ` +
    'for the change to reach the client');
  const settleServed = {};
  const settleErrors = {};
  const settleEnd = Date.now() + args.settleSeconds * 1000;
  while (Date.now() < settleEnd) {
    const r = await runRpcs(client, 1);
    for (const [k, v] of Object.entries(r.served)) settleServed[k] = (settleServed[k] || 0) + v;
    for (const [k, v] of Object.entries(r.errors)) settleErrors[k] = (settleErrors[k] || 0) + v;
    await sleep(SETTLE_INTERVAL_MS);
  }
  log(`during the ${args.settleSeconds.toFixed(1)} s: responses ${fmt(settleServed)}, ` +
    `errors ${fmt(settleErrors)}`);

  ({served, errors} = await runRpcs(client, PHASE2_RPCS));
  log(`phase 2: ${PHASE2_RPCS} RPCs: responses ${fmt(served)}, errors ${fmt(errors)}`);
  check(`no RPC reaches deregistered endpoint g2 ${args.settleSeconds} s after its deletion`,
    count(served, 'v2') === 0 && count(served, 'v1') >= 130,
    `${count(served, 'v2')} responses from v2 (expected 0), ` +
      `${count(served, 'v1')} from v1 (expected >= 130)`);
  check('v2 subset served by its new endpoint g3, no RPC failed during the switch',
    count(served, 'v2b') >= 10 && total(errors) === 0 && total(settleErrors) === 0,
    `${count(served, 'v2b')} responses from v2b (expected >= 10), ${total(errors)} errors, ` +
      `${total(settleErrors)} during the ${args.settleSeconds.toFixed(1)} s (expected 0)`);

  client.close();
  log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`FAIL ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  });

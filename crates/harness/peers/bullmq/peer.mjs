// The BullMQ side of `just bench` scenario 3, one role per process:
//   node peer.mjs worker   --redis URL --prefix P --jobs N --concurrency C
//   node peer.mjs producer --redis URL --prefix P --jobs N --concurrency C [--rate R]
// Each prints READY once connected; the producer then waits for a line on
// stdin before it starts. The worker exits after N jobs have started and
// prints a JSON line with the enqueue-to-start waits; the producer prints
// one with its enqueue time. Payloads are {"t": <enqueue time, µs>}, the
// same as Trellis's in the same scenario.
import { Queue, Worker } from 'bullmq';
import { createInterface } from 'node:readline';

const args = Object.fromEntries(
  process.argv.slice(3).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const role = process.argv[2];
const url = new URL(args.redis ?? 'redis://127.0.0.1:6379');
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
const prefix = args.prefix ?? 'bull';
const jobs = Number(args.jobs ?? 1000);
const concurrency = Number(args.concurrency ?? 64);
const rate = Number(args.rate ?? 0);
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
// Bounded: no run of the benchmark may hang.
setTimeout(() => { console.error(`${role}: gave up after 600 s`); process.exit(3); }, 600_000).unref();

if (role === 'worker') {
  const waits = new Float64Array(jobs);
  let started = 0;
  let finish;
  const done = new Promise((r) => { finish = r; });
  const worker = new Worker('bench', async (job) => {
    if (started < jobs) waits[started] = nowUs() - job.data.t;
    started += 1;
    if (started === jobs) finish();
  }, { connection, prefix, concurrency, autorun: true });
  await worker.waitUntilReady();
  console.log('READY');
  await done;
  waits.sort();
  const pct = (p) => waits[Math.min(jobs - 1, Math.floor(p * jobs))] / 1000;
  console.log(JSON.stringify({ started, p50_ms: pct(0.5), p99_ms: pct(0.99) }));
  await worker.close();
  process.exit(0);
} else if (role === 'producer') {
  const queue = new Queue('bench', { connection, prefix });
  await queue.waitUntilReady();
  console.log('READY');
  const lines = createInterface({ input: process.stdin });
  await new Promise((r) => lines.once('line', r));
  const t0 = performance.now();
  const perLoop = Math.ceil(jobs / concurrency);
  const interval = rate > 0 ? (1000 * concurrency) / rate : 0;
  const opts = { removeOnComplete: true, removeOnFail: true };
  await Promise.all(Array.from({ length: concurrency }, async (_, p) => {
    for (let i = 0; i < perLoop && p + i * concurrency < jobs; i += 1) {
      if (interval > 0) {
        const due = t0 + i * interval + (p * interval) / concurrency;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      await queue.add('noop', { t: nowUs() }, opts);
    }
  }));
  console.log(JSON.stringify({ enqueued: jobs, seconds: (performance.now() - t0) / 1000 }));
  await queue.close();
  process.exit(0);
} else {
  console.error(`unknown role ${role}: worker or producer`);
  process.exit(2);
}

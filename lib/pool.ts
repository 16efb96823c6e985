import { getMaxListeners, setMaxListeners } from 'node:events';

// Bounded concurrency: fn over items with at most `limit` calls in flight, results in input
// order. The first failure stops handing out new items and is rethrown once in-flight calls end.
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i], i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(
    Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker),
  );
  const bad = results.find((r) => r.status === 'rejected');
  if (bad) throw bad.reason;
  return out;
}

// Requests in flight each listen on a shared abort signal until they end: `inFlight` more at once
// is expected, not a leak (Node warns past its limit, 10 by default). Users of one signal add up.
export function allowListeners(signal: AbortSignal | undefined, inFlight: number): void {
  if (signal) setMaxListeners(getMaxListeners(signal) + inFlight, signal);
}

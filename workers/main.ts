// Standalone worker: node --import tsx workers/main.ts [--queues control,sampler,trainer]
// [--address HOST:PORT] [--namespace NS] [--tls] [--api-key-env NAME]. Defaults come from
// TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE. SIGINT or SIGTERM drains running tasks and exits 0.
import { parseArgs } from 'node:util';
import { QUEUE_NAMES, installWorkerLogging, runWorker, type QueueName } from './index.ts';

const USAGE = `Usage: node --import tsx workers/main.ts [--queues ${QUEUE_NAMES.join(',')}] \
[--address HOST:PORT]
       [--namespace NS] [--tls] [--api-key-env NAME]
One process serves the queues given (default all); a GPU machine runs --queues trainer.`;

let values;
try {
  ({ values } = parseArgs({
    options: {
      queues: { type: 'string', default: QUEUE_NAMES.join(',') },
      address: { type: 'string', default: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' },
      namespace: { type: 'string', default: process.env.TEMPORAL_NAMESPACE ?? 'default' },
      tls: { type: 'boolean', default: false },
      'api-key-env': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (err) {
  console.error(`opsr worker: ${(err as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

installWorkerLogging('INFO');
const taskQueues = values.queues
  .split(',')
  .map((q) => q.trim())
  .filter(Boolean) as QueueName[];
try {
  await runWorker({
    address: values.address,
    namespace: values.namespace,
    tls: values.tls,
    apiKeyEnv: values['api-key-env'],
    taskQueues,
  });
} catch (err) {
  console.error(`opsr worker: ${(err as Error).message}`);
  process.exit(1);
}

// A worker in its own process with the test activities, so a test can SIGKILL it mid-activity.
// Env: OPSR_TEST_ADDRESS (Temporal address), OPSR_TEST_CONTROLS (TestControls JSON).
// Prints "ready" once its workers poll.
import { createWorkers, installWorkerLogging } from '../../workers/index.ts';
import { testActivities, type TestControls } from './workflow-activities.ts';

installWorkerLogging();
const controls = JSON.parse(process.env.OPSR_TEST_CONTROLS ?? '{}') as TestControls;
const w = await createWorkers({
  address: process.env.OPSR_TEST_ADDRESS,
  activities: testActivities(controls),
});
const running = w.run();
console.log('ready');
await running;

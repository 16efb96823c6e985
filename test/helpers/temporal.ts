// A real Temporal dev server for tests: the local `temporal` CLI (no download), bound to
// 127.0.0.1, with opsr's search attributes registered. Call env.teardown() in `after`.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { findTemporalCli } from '../../lib/temporal.ts';
import { SEARCH_ATTRIBUTES } from '../../contracts/workflows.ts';

export async function createTestEnv(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: findTemporalCli() },
      ip: '127.0.0.1',
      searchAttributes: Object.values(SEARCH_ATTRIBUTES),
    },
  });
}

// Failures the workflows must not retry (types listed in api.ts NON_RETRYABLE_ERRORS).
import { ApplicationFailure } from '@temporalio/common';

export function badInput(message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type: 'BadInput', message, nonRetryable: true, details: details === undefined ? undefined : [details] });
}

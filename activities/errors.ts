// Failures the workflows must not retry (types listed in contracts/activities.ts
// NON_RETRYABLE_ERRORS).
import { ApplicationFailure } from '@temporalio/common';

export function badInput(message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({
    type: 'BadInput',
    message,
    nonRetryable: true,
    details: details === undefined ? undefined : [details],
  });
}

// An HTTP answer that says the request itself is wrong (bad model name, URL, key, body): retrying
// cannot help. Timeouts, conflicts and rate limits (408, 409, 429) can pass, so they retry.
export function isRequestError(status: number): boolean {
  return status >= 400 && status < 500 && ![408, 409, 429].includes(status);
}

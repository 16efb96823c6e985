// Config errors: one line per problem, `<field path>: <what is wrong> (got <value>; allowed
// <what>)`, with the allowed text read off the schema itself (its .describe() texts, enums,
// bounds). Pure, like schema.ts: workflows format their input's errors in the sandbox.
import { z } from 'zod';

export type Issue = { path: (string | number)[]; message: string; input: unknown; allowed: string };
// Cross-field checks collect Issues; this hands them to zod with the "allowed" text as a param.
export function report(ctx: z.RefinementCtx, issues: Issue[]) {
  for (const i of issues)
    ctx.addIssue({
      code: 'custom',
      path: i.path,
      message: i.message,
      input: i.input,
      params: { allowed: i.allowed },
    });
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

export class ConfigError extends Error {
  readonly issues: string[];
  constructor(source: string, issues: string[]) {
    super(
      `${source}: ${issues.length} ` +
        `problem${issues.length === 1 ? '' : 's'}\n${issues.map((i) => `  ${i}`).join('\n')}`,
    );
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatPath(p: readonly PropertyKey[]): string {
  let s = '';
  for (const k of p) s += typeof k === 'number' ? `[${k}]` : s ? `.${String(k)}` : String(k);
  return s || '(root)';
}

// Keys whose values are credentials, and values that look like one wherever they are (bearer
// tokens, OpenAI/Hugging Face/GitHub keys): messages never echo them.
const SECRET_KEY = new RegExp(
  [
    'api[-_]?key',
    'secret',
    'passw',
    'authori[sz]ation',
    'credential',
    'cookie',
    '(^|[-_])(access|auth|bearer|hf|refresh|session)?[-_]?token$',
  ].join('|'),
  'i',
);
const SECRET_VALUE = /^(?:bearer\s|sk-|hf_|ghp_|gho_|github_pat_|xox[abp]-|AKIA)/i;
const HIDDEN = '(a value, not shown)';
function maskSecrets(v: unknown, depth = 0): unknown {
  if (typeof v === 'string') return SECRET_VALUE.test(v.trim()) ? HIDDEN : v;
  if (!v || typeof v !== 'object' || depth > 32) return v;
  if (Array.isArray(v)) return v.map((x) => maskSecrets(x, depth + 1));
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => [k, SECRET_KEY.test(k) ? HIDDEN : maskSecrets(x, depth + 1)]),
  );
}

export function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(maskSecrets(v)) ?? typeof v; // a function or symbol: never in JSON input
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
// A value under a credential-named key (sampling.extra.api_key) is not shown at all.
const secretPath = (p: readonly PropertyKey[]) =>
  p.some((k) => typeof k === 'string' && SECRET_KEY.test(k) && k !== 'apiKeyEnv');

// Walks the schema along a path (through defaults, optionals, unions, arrays and records).
type Def = {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  valueType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
};
const defOf = (s: z.ZodType) => (s as unknown as { _zod: { def: Def } })._zod.def;
function unwrap(s: z.ZodType): z.ZodType[] {
  const d = defOf(s);
  if (d.innerType && d.type !== 'object') return unwrap(d.innerType);
  if (d.type === 'pipe' && d.in) return unwrap(d.in);
  if (d.type === 'union' && d.options) return [s, ...d.options.flatMap(unwrap)];
  return [s];
}
function schemaAt(root: z.ZodType, path: readonly PropertyKey[]): z.ZodType[] {
  let cur = unwrap(root);
  for (const k of path) {
    const next: z.ZodType[] = [];
    for (const s of cur) {
      const d = defOf(s);
      if (d.type === 'object' && typeof k === 'string' && d.shape?.[k]) next.push(d.shape[k]);
      else if (d.type === 'array' && typeof k === 'number' && d.element) next.push(d.element);
      else if (d.type === 'record' && d.valueType) next.push(d.valueType);
    }
    cur = next.flatMap(unwrap);
  }
  return cur;
}
function describedAt(root: z.ZodType, path: readonly PropertyKey[]): string | undefined {
  for (const s of schemaAt(root, path)) if (s.description) return s.description;
  return undefined;
}
function keysAt(root: z.ZodType, path: readonly PropertyKey[]): string[] {
  const keys = new Set<string>();
  for (const s of schemaAt(root, path)) {
    const d = defOf(s);
    if (d.type === 'object' && d.shape) for (const k of Object.keys(d.shape)) keys.add(k);
  }
  return [...keys];
}

const KIND: Record<string, string> = {
  number: 'a number',
  int: 'an integer',
  string: 'a string',
  array: 'a list',
  object: 'an object',
  boolean: 'true or false',
  record: 'an object',
};

function isIntAt(root: z.ZodType, path: readonly PropertyKey[]): boolean {
  return schemaAt(root, path).some((s) => (defOf(s) as { format?: string }).format === 'safeint');
}

function allowedFor(root: z.ZodType, i: z.core.$ZodIssue): string {
  const described = describedAt(root, i.path);
  const kind = (origin: string) =>
    origin === 'number' && isIntAt(root, i.path) ? 'an integer' : (KIND[origin] ?? origin);
  switch (i.code) {
    case 'invalid_type':
      return described ?? KIND[i.expected] ?? i.expected;
    case 'too_small': {
      const what =
        i.origin === 'array'
          ? `at least ${i.minimum} item${i.minimum === 1 ? '' : 's'}`
          : i.origin === 'string'
            ? `at least ${i.minimum} character${i.minimum === 1 ? '' : 's'}`
            : `${i.inclusive ? '>=' : '>'} ${i.minimum}`;
      return described ? `${described}; ${what}` : `${kind(i.origin)} ${what}`;
    }
    case 'too_big': {
      const what =
        i.origin === 'array'
          ? `at most ${i.maximum} items`
          : i.origin === 'string'
            ? `at most ${i.maximum} characters`
            : `${i.inclusive ? '<=' : '<'} ${i.maximum}`;
      return described ? `${described}; ${what}` : `${kind(i.origin)} ${what}`;
    }
    case 'invalid_value':
      return `one of ${i.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union': {
      if ('options' in i && Array.isArray(i.options))
        return `one of ${i.options.map((v) => JSON.stringify(v)).join(', ')}`;
      if (described) return described;
      const parts = i.errors.flatMap((e) =>
        e
          .filter((x) => x.path.length === 0)
          .map((x) =>
            x.code === 'invalid_value'
              ? x.values.map((v) => JSON.stringify(v)).join(', ')
              : x.code === 'invalid_type'
                ? (KIND[x.expected] ?? x.expected)
                : '',
          ),
      );
      return parts.filter(Boolean).join(' or ') || 'one of the documented forms';
    }
    case 'custom':
      return String(
        (i.params as { allowed?: string } | undefined)?.allowed ?? described ?? 'see docs/usage.md',
      );
    case 'not_multiple_of':
      return `a multiple of ${i.divisor}`;
    default:
      return described ?? 'see docs/usage.md';
  }
}

const kindOf = (v: unknown) =>
  Array.isArray(v) ? 'a list' : v === null ? 'null' : `a ${typeof v}`;

function wrongFor(i: z.core.$ZodIssue): string {
  switch (i.code) {
    case 'invalid_type':
      return i.input === undefined
        ? 'is required'
        : `is ${kindOf(i.input)}, not ${KIND[i.expected] ?? i.expected}`;
    case 'too_small':
      return 'is too small';
    case 'too_big':
      return 'is too large';
    case 'invalid_value':
      return 'is not an allowed value';
    case 'invalid_union':
      return 'matches none of the allowed forms';
    case 'custom':
      return i.message;
    default:
      return i.message;
  }
}

// One line per problem: `<field path>: <what is wrong> (got <value>; allowed <what>)`.
export function formatIssues(
  root: z.ZodType,
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[] = [],
): string[] {
  const lines: string[] = [];
  for (const i of issues) {
    if (i.code === 'unrecognized_keys') {
      const known = keysAt(root, i.path);
      for (const k of i.keys) {
        const got = i.input?.[k];
        lines.push(
          `${formatPath([...prefix, ...i.path, k])}: is not a known field (got ` +
            `${SECRET_KEY.test(k) ? 'a value, not shown' : show(got)}; allowed ` +
            `${known.join(', ')})`,
        );
      }
      continue;
    }
    const secret =
      (i.code === 'custom' && (i.params as { secret?: boolean } | undefined)?.secret) ||
      secretPath(i.path);
    // A discriminated union names the discriminator's path but carries the whole object.
    const discriminator =
      'discriminator' in i && typeof i.discriminator === 'string' ? i.discriminator : null;
    const input = discriminator && isPlainObject(i.input) ? i.input[discriminator] : i.input;
    lines.push(
      `${formatPath([...prefix, ...i.path])}: ${wrongFor(i)} (got ` +
        `${secret ? 'a value, not shown' : show(input)}; allowed ${allowedFor(root, i)})`,
    );
  }
  return lines;
}

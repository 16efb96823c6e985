#!/usr/bin/env node
// Entry point for the `opsr` command: registers tsx so the TypeScript sources run as they are.
import { register } from 'tsx/esm/api';
register();
await import('../cli/opsr.ts');

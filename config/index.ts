// The config API for Node code (CLI, activities, workers). Workflow code imports
// config/schema.ts directly: this module also reads files.
export * from './schema.ts';
export * from './defaults.ts';
export { ConfigError } from './errors.ts';
export { readJsonFile, presetPath, PRESETS_DIR, type LoadOptions } from './load.ts';

// The config API for Node code (CLI, activities, workers). Workflow code imports
// config/schema.ts directly: this module also reads files.
export * from './schema.ts';
export { loadRunConfig, loadAblationConfig, readJsonFile, presetPath, PRESETS_DIR } from './load.ts';

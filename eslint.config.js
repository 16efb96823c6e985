// The lint gate `npm test` runs after tsc (scripts/lint.sh): typescript-eslint's type-aware rules.
// A forgotten await on an activity, a workflow API or a child process is lost work in a Temporal
// app, so the promise rules are errors.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // Python environments (.venv, .venv-vllm) ship JavaScript of their own.
  { ignores: ['node_modules/', 'engine/', '.venv*/', '.opsr/', 'bench/results/'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test() and describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // No line over prettier's 100 columns: prettier leaves long strings, comments, regex
      // literals and test titles alone, so this rule holds them to it, with no exemptions.
      'max-len': ['error', { code: 100 }],
      // JSON from files, HTTP bodies and child processes is checked where it is read and then
      // cast; flagging every access to it would bury the rules above.
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      // `async` on a function without await still matters: it turns a throw into a rejection
      // (interface implementations such as the builtin judge rely on that).
      '@typescript-eslint/require-await': 'off',
      // `_`-prefixed names are destructured only to leave them out of a rest object.
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          varsIgnorePattern: '^_',
          argsIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
    },
  },
  // Tests edit the JSON headers of binary files (safetensors, engine data) field by field.
  // MockActivityEnvironment.run cannot infer an activity's result type; the tests' helpers cast.
  {
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
    },
  },
  // Plain JavaScript (bin/, this file) is not in the TypeScript project.
  { files: ['**/*.js', '**/*.mjs'], extends: [tseslint.configs.disableTypeChecked] },
);

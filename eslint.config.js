// ESLint flat config: @eslint/js recommended plus typescript-eslint's type-aware recommended rules.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    // examples/package-consumer is its own package: it imports the built cordon and has its own tsconfig.
    ignores: ['dist/', 'node_modules/', 'examples/package-consumer/'],
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Promises: fire-and-forget is written `void promise` on purpose; everything else is awaited or handled.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // Non-null assertions stay allowed (tests lean on them): no-non-null-assertion is not in the recommended set.
      // Passing a caught error on as it came is fine (as only-throw-error allows for `throw`).
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],

      // Off as noise for this codebase, which parses JSON from databases, backends and the network:
      // those values are `any`/`unknown` at the boundary by nature and are checked (zod, typeof) where used.
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      // String(x) of a value narrowed from `unknown` (typed `{}`) is deliberate; template literals are still checked below.
      '@typescript-eslint/no-base-to-string': 'off',
      // `async` without `await` is deliberate: it implements a Promise-returning interface and turns a throw into a rejection.
      '@typescript-eslint/require-await': 'off',
      // Sanitising control characters out of untrusted text is the point of those regular expressions.
      'no-control-regex': 'off',
      // Arrays in messages read fine comma-joined.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowAny: true, allowBoolean: true, allowNullish: true, allowNumber: true, allowRegExp: true, allowArray: true },
      ],
    },
  },
  {
    // Plain JavaScript (the bin shim, this file) is outside the TypeScript project: lint it without types.
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: { process: 'readonly', URL: 'readonly' } },
  },
);

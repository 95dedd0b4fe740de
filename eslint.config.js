// eslint (typescript-eslint) over src/ and test/: issue 13's lint, run by make test through
// test/code/tools.test.ts. Formatting is prettier's (.prettierrc.json), not eslint's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/',
      'native/',
      'node_modules/',
      'test-results/',
      '.bench/',
      'demo/',
      'bench/',
      'examples/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Plain Node scripts (test/support/print-summary.mjs, the e2e and soak load generators).
    files: ['**/*.mjs'],
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setImmediate: 'readonly',
        URL: 'readonly',
      },
    },
  },
  {
    files: ['**/*.ts'],
    rules: {
      // tsc resolves every name (typescript-eslint's advice for TypeScript files).
      'no-undef': 'off',
      // Unused names are tsc's job (noUnusedLocals, noUnusedParameters); `_` marks a deliberate one.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      // Prettier wraps code at 100 columns but not comments: they are held to the same width.
      // Long string and template literals (messages a user reads whole) are let through.
      'max-len': [
        'error',
        {
          code: 100,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
          ignoreUrls: true,
        },
      ],
    },
  },
);

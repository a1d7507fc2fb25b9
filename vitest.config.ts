import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // End-to-end tests build namespaces and run the agent as a process; they carry
    // their own longer timeouts. Files run in separate processes so a failing test
    // cannot leave state in another.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});

/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// The build is embedded in cloudcode-server (server/build.rs), which serves
// it from the API origin; nothing is loaded from anywhere else, so the CSP
// can say 'self'.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 8000,
    // Fonts and small icons stay separate files: the CSP does not allow
    // data: scripts, and separate assets cache better.
    assetsInlineLimit: 0,
  },
  worker: { format: 'es' },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});

// Vite builds the UI into dist/ (served by the api service at /, packaged with it);
// `npm run dev` serves it with hot reload and sends /api to a local `cyclone up`.
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

export default defineConfig({
  plugins: [vue()],
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      // SSE streams go through too: http-proxy passes chunked responses on as they come.
      '/api': { target: 'http://127.0.0.1:8080', changeOrigin: false },
    },
  },
})

/**
 * Galata/Playwright configuration. tests/test_ui.py starts the scheduler and JupyterLab and
 * passes their addresses in QHPC_* variables; the browser is Debian's Chromium.
 */
const path = require('path');
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const artifacts = process.env.QHPC_ARTIFACTS || path.resolve(__dirname, '../../test-artifacts/ui');

module.exports = {
  ...baseConfig,
  reporter: [['list']],
  timeout: 180000,
  expect: { timeout: 30000 },
  retries: 0,
  workers: 1,
  outputDir: path.join(artifacts, 'playwright'),
  use: {
    ...baseConfig.use,
    baseURL: process.env.QHPC_LAB_URL,
    viewport: { width: 1280, height: 800 },
    trace: 'off',
    video: 'off',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync'
      ]
    }
  }
};

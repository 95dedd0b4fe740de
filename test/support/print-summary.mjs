// Prints the final `N passed, N failed` line from vitest's JSON report (CI reads it).
import { readFileSync } from 'node:fs';

const path = process.argv[2];
let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const report = JSON.parse(readFileSync(path, 'utf8'));
  passed = report.numPassedTests ?? 0;
  failed = (report.numFailedTests ?? 0) + (report.numRuntimeErrorTestSuites ?? 0);
  skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  if (report.numFailedTestSuites && failed === 0) failed = report.numFailedTestSuites;
  // Each failure again, briefly, just above the last line: a log cut to its tail (CI) still
  // shows which test failed and why (a model-test failure names its seed there).
  for (const file of report.testResults ?? []) {
    for (const test of file.assertionResults ?? []) {
      if (test.status !== 'failed') continue;
      let message = (test.failureMessages ?? [])
        .join(' ')
        // eslint-disable-next-line no-control-regex -- strips the colour escapes of vitest's messages
        .replace(/\x1b\[[0-9;]*m/g, '')
        .split('\n')[0]
        .slice(0, 600);
      if (message === 'Error: STACK_TRACE_ERROR')
        message = 'no message in the report (a timeout, say): see the log above';
      console.log(
        `FAILED ${file.name.replace(process.cwd() + '/', '')} > ${test.fullName}: ${message}`,
      );
    }
    if (file.status === 'failed' && (file.assertionResults ?? []).length === 0)
      console.log(
        `FAILED ${file.name.replace(process.cwd() + '/', '')}: ${String(file.message ?? '')
          .split('\n')[0]
          .slice(0, 600)}`,
      );
  }
} catch (error) {
  console.error(`cannot read the test report ${path}: ${error.message}`);
  failed = Math.max(failed, 1);
}
console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ''));

/**
 * The QPU sidebar in a real JupyterLab against a real scheduler (started by tests/test_ui.py):
 * the target shows, a %%qpu cell's job shows its queue position then its completion, the
 * badge follows a calibration, Cancel works; the "Batch runs" section and the "Run as batch
 * job" dialog (runs seeded by tests/test_ui.py); last, the scheduler is killed and the sidebar
 * says it is offline. Screenshots and the measured latency from a job's state change in the
 * scheduler to the sidebar showing it go to $QHPC_ARTIFACTS.
 */
import { expect, test } from '@jupyterlab/galata';
import { APIRequestContext, Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const SCHEDULER = process.env.QHPC_SCHEDULER_URL as string;
const TARGET = process.env.QHPC_TARGET as string;
const USER = { Authorization: `Bearer ${process.env.QHPC_USER_TOKEN}` };
const ADMIN = { Authorization: `Bearer ${process.env.QHPC_ADMIN_TOKEN}` };
const OTHER = { Authorization: `Bearer ${process.env.QHPC_OTHER_TOKEN}` };
const ARTIFACTS = process.env.QHPC_ARTIFACTS as string;
const SIDEBAR = 'qhpc-qpu-sidebar';
const SCHEDULER_PID = Number(process.env.QHPC_SCHEDULER_PID);

const SETUP = `from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

register = Register.from_coordinates([(-3.0, 0.0), (3.0, 0.0)], prefix="q")
sequence = Sequence(register, AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "g")
sequence.measure("ground-rydberg")
%qpu targets`;

// production, like the blocker: it queues behind it and a 'test' job goes ahead of it.
const CELL = `%%qpu --shots 200 --name ui-test --class production
sequence`;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

/** The scheduler's own job document (its timestamps are the reference for latency). */
async function schedulerJobs(request: APIRequestContext): Promise<any[]> {
  const response = await request.get(`${SCHEDULER}/jobs`, { headers: USER });
  expect(response.ok()).toBeTruthy();
  return response.json();
}

async function submit(
  request: APIRequestContext,
  shots: number,
  as = USER,
  jobClass = 'production'
): Promise<any> {
  const response = await request.post(`${SCHEDULER}/jobs`, {
    headers: as,
    data: {
      sequence: process.env.QHPC_SEQUENCE,
      shots,
      name: `blocker-${shots}`,
      job_class: jobClass
    }
  });
  expect(response.ok()).toBeTruthy();
  return response.json();
}

/**
 * Browser time at which each job status and target state first appeared in the sidebar, and
 * each change of a job's queue position ([job id, position, time]).
 */
async function recordSightings(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: Record<string, number> = {};
    const moves: [string, string, number][] = [];
    const last: Record<string, string> = {};
    (window as any).qhpcSeen = seen;
    (window as any).qhpcMoves = moves;
    const record = (): void => {
      const now = Date.now();
      document.querySelectorAll<HTMLElement>('li.qhpc-job').forEach(li => {
        const key = `job:${li.dataset.jobId}:${li.dataset.status}`;
        seen[key] = seen[key] ?? now;
        const id = li.dataset.jobId as string;
        const position = li.dataset.position as string;
        if (last[id] !== position) {
          last[id] = position;
          moves.push([id, position, now]);
        }
      });
      document.querySelectorAll<HTMLElement>('.qhpc-target .qhpc-badge').forEach(badge => {
        const key = `state:${badge.dataset.state}`;
        seen[key] = seen[key] ?? now;
      });
    };
    new MutationObserver(record).observe(document.body, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ['data-status', 'data-state', 'data-position']
    });
    record();
  });
}

test('the QPU sidebar follows a %%qpu job and a calibration', async ({ page, request }) => {
  const sidebar = page.locator(`#${SIDEBAR}`);
  const card = sidebar.locator(`.qhpc-target[data-target="${TARGET}"]`);
  const status = page.locator('.qhpc-status-item');

  await page.sidebar.openTab(SIDEBAR);
  await expect(card.locator('.qhpc-badge')).toHaveText('online');
  await expect(card).toContainText('Calibrated');
  await expect(card).toContainText('Queue empty');
  await expect(sidebar.locator('.qhpc-live')).toHaveAttribute('data-state', 'live');
  await expect(card.locator('.qhpc-default')).toHaveText('default');
  await expect(sidebar.locator('.qhpc-empty')).toContainText('No jobs yet');
  await expect(status).toContainText(`${TARGET}`);
  await expect(status).toContainText('no job queued');
  await shot(page, '01-sidebar-target-online');

  // The kernel imports Pulser and probes its targets first, so that the job is queued
  // while the blocker (10 s of shots) still runs.
  await page.notebook.createNew('qpu.ipynb', { kernel: 'python3-qpu' });
  await page.notebook.setCell(0, 'code', SETUP);
  await page.notebook.runCell(0, { inplace: true });
  const targets = ((await page.notebook.getCellTextOutput(0)) ?? []).join('\n');
  expect(targets).toContain(TARGET);
  expect(targets).not.toContain('unreachable');
  await page.notebook.addCell('code', CELL);

  await recordSightings(page);
  const blocker = await submit(request, 10000);
  await expect(sidebar.locator(`li[data-job-id="${blocker.id}"]`)).toHaveAttribute(
    'data-status',
    'RUNNING'
  );
  await page.notebook.runCell(1, { inplace: true, wait: false });

  let job: any;
  await expect
    .poll(
      async () => {
        job = (await schedulerJobs(request)).find(j => j.name === 'ui-test');
        return job?.id;
      },
      { timeout: 90000 }
    )
    .toBeDefined();
  const row = sidebar.locator(`li[data-job-id="${job.id}"]`);
  await expect(row).toHaveAttribute('data-status', 'PENDING');
  await expect(row.locator('.qhpc-position')).toHaveText(/1st of 1 waiting/);
  // Both estimates, never a bare ETA: when it starts (the running job's shots left) and ends.
  await expect(row.locator('.qhpc-eta')).toHaveText(/starts in ~.* · ends in ~/);
  await expect(status).toContainText(`job #${blocker.id} running`);
  // The running job is not counted as waiting.
  await expect(card.locator('.qhpc-queue-total')).toHaveText('1 running, 1 waiting');
  await shot(page, '02-job-queued-behind-another');

  // Another user's job that outranks mine (class test) moves it back, its cancellation
  // forward again: carried by the queue event, with no REST re-read and no refresh period.
  const reads: string[] = [];
  const onRequest = (r: { url(): string }): void => {
    if (/\/qhpc\/api\/(jobs|targets)/.test(r.url())) {
      reads.push(r.url());
    }
  };
  page.on('request', onRequest);
  const moved = async (position: string, since: number): Promise<number> => {
    await expect(row).toHaveAttribute('data-position', position, { timeout: 2000 });
    const moves: [string, string, number][] = await page.evaluate(
      () => (window as any).qhpcMoves
    );
    const move = moves.find(([id, p, t]) => id === String(job.id) && p === position && t >= since);
    return (move as [string, string, number])[2] - since;
  };
  const aheadSent = Date.now();
  const ahead = await submit(request, 5000, OTHER, 'test');
  const movedBackMs = await moved('2', aheadSent);
  await expect(row.locator('.qhpc-position')).toHaveText(/2nd of 2 waiting/);
  await expect(card.locator('.qhpc-queue-total')).toHaveText('1 running, 2 waiting');
  await shot(page, '02b-moved-back-by-another-user');
  const cancelSent = Date.now();
  const canceled = await request.post(`${SCHEDULER}/jobs/${ahead.id}/cancel`, {
    headers: OTHER
  });
  expect(canceled.ok()).toBeTruthy();
  const movedForwardMs = await moved('1', cancelSent);
  page.off('request', onRequest);
  expect(reads).toEqual([]);

  await expect(row).toHaveAttribute('data-status', 'DONE', { timeout: 60000 });
  await expect(row.locator('.qhpc-progress-text')).toHaveText('200/200 shots');
  await page.notebook.waitForRun(1);
  await expect(status).toContainText('no job queued');
  await shot(page, '03-job-done');

  const finished = (await schedulerJobs(request)).find(j => j.id === job.id);
  const seen: Record<string, number> = await page.evaluate(() => (window as any).qhpcSeen);
  const at = (iso: string | null): number | null => (iso ? Date.parse(iso) : null);
  const latency = (changed: string | null, key: string): number | null => {
    const t = at(changed);
    return t !== null && seen[key] !== undefined ? seen[key] - t : null;
  };
  const report = {
    job: job.id,
    queued_ms: latency(finished.created_at, `job:${job.id}:PENDING`),
    running_ms: latency(finished.started_at, `job:${job.id}:RUNNING`),
    done_ms: latency(finished.finished_at, `job:${job.id}:DONE`),
    blocker_done_ms: latency(
      (await schedulerJobs(request)).find(j => j.id === blocker.id).finished_at,
      `job:${blocker.id}:DONE`
    ),
    calibrating_ms: null as number | null,
    queue_moved_back_ms: movedBackMs,
    queue_moved_forward_ms: movedForwardMs
  };

  const asked = Date.now();
  const calibrate = await request.post(`${SCHEDULER}/admin/calibrate`, { headers: ADMIN });
  expect(calibrate.ok()).toBeTruthy();
  await expect(card.locator('.qhpc-badge')).toHaveText('calibrating');
  report.calibrating_ms = (await page.evaluate(() => (window as any).qhpcSeen))[
    'state:calibrating'
  ] - asked;
  await expect(card).toContainText('Calibrating now');
  await expect(status.locator('.qhpc-badge')).toHaveText('calibrating');
  await shot(page, '04-calibrating');
  await expect(card.locator('.qhpc-badge')).toHaveText('online', { timeout: 30000 });
  await expect(card).toContainText(/Calibrated \d+ s ago/);

  const doomed = await submit(request, 5000);
  const doomedRow = sidebar.locator(`li[data-job-id="${doomed.id}"]`);
  await doomedRow.getByRole('button', { name: 'Cancel' }).click();
  await expect(doomedRow).toHaveAttribute('data-status', 'CANCELED');
  await shot(page, '05-after-calibration-and-cancel');

  fs.writeFileSync(path.join(ARTIFACTS, 'latency.json'), JSON.stringify(report, null, 2));
  console.log(`sidebar latency (ms): ${JSON.stringify(report)}`);
});

test('the sidebar says so when the service fails or finds no QPU', async ({ page }) => {
  // First every /qhpc/api route fails; then the service answers, having found no QPU.
  const noQpu: Record<string, unknown> = {
    targets: {
      targets: [{ name: 'emulator', kind: 'emulator', type: 'emulator', state: 'ONLINE' }],
      default: null,
      problems: [],
      sources: ['QRMI_JOB_QPU_RESOURCES', '~/.config/qhpc/targets.toml']
    },
    jobs: { jobs: [], errors: {} }
  };
  let failing = true;
  await page.route('**/qhpc/api/**', route => {
    const name = new URL(route.request().url()).pathname.split('/').pop() as string;
    if (failing) {
      return route.fulfill({
        status: 503,
        json: { message: 'Service Unavailable (simulated by the test)' }
      });
    }
    return name in noQpu ? route.fulfill({ json: noQpu[name] }) : route.continue();
  });
  await page.goto();
  await page.sidebar.openTab(SIDEBAR);
  const sidebar = page.locator(`#${SIDEBAR}`);
  await expect(sidebar.locator('.qhpc-error')).toContainText('did not answer');
  await expect(page.locator('.qhpc-status-item')).toContainText('QPU unavailable');
  await shot(page, '06-error-state');

  failing = false;
  await sidebar.getByRole('button', { name: 'Retry' }).click();
  await expect(sidebar.locator('.qhpc-empty').first()).toContainText('No QPU for this Lab');
  await expect(sidebar.locator('.qhpc-empty').last()).toContainText('No jobs yet');
  await expect(page.locator('.qhpc-status-item')).toContainText('QPU: emulator');
  await shot(page, '07-empty-state');
});

test('batch runs: the sidebar section, the executed notebook and the dialog', async ({
  page,
  request
}) => {
  const runs = JSON.parse(process.env.QHPC_BATCH_RUNS as string);
  // The done run's kernel recorded a QPU job (pending when it last wrote): a real one.
  const qpuJob = await submit(request, 10);
  fs.writeFileSync(
    runs.done.journal,
    JSON.stringify({ qpu_jobs: [{ id: qpuJob.id, target: TARGET, status: 'PENDING' }] })
  );
  await page.goto();
  await page.sidebar.openTab(SIDEBAR);
  const section = page.locator(`#${SIDEBAR} .qhpc-batch-runs`);
  const done = section.locator(`li[data-batch-id="${runs.done.id}"]`);
  const failed = section.locator(`li[data-batch-id="${runs.failed.id}"]`);
  await expect(section.locator('li.qhpc-batch')).toHaveCount(2);
  await expect(section.locator('li.qhpc-batch').first()).toHaveAttribute(
    'data-batch-id',
    runs.failed.id
  ); // newest first
  await expect(done.locator('.qhpc-status')).toHaveText('done');
  await expect(done).toContainText('slurm job 101 · production · 1 QPU slot');
  await expect(done.locator('.qhpc-batch-where')).toHaveText('ran on localhost');
  // Its QPU job's status is the live one of "My jobs", not the journal's.
  const ranJob = done.locator(`.qhpc-batch-qpu-job[data-job-id="${qpuJob.id}"]`);
  await expect(ranJob).toHaveAttribute('data-status', 'done');
  await expect(failed.locator('.qhpc-status')).toHaveText('failed');
  await expect(failed.locator('.qhpc-batch-failure')).toHaveText(
    'cell 5: ZeroDivisionError: division by zero'
  );
  await expect(failed.getByRole('button', { name: 'Cancel' })).toHaveCount(0);
  await section.scrollIntoViewIfNeeded();
  await shot(page, '09-batch-runs');

  await failed.getByRole('button', { name: 'Open executed notebook' }).click();
  const executedName = runs.failed.executed.split('/').pop();
  await expect(page.locator('.jp-mod-current.lm-TabBar-tab')).toContainText(executedName);
  await expect(page.locator('.jp-NotebookPanel:visible .jp-OutputArea-output')).toContainText(
    'ZeroDivisionError: division by zero'
  );
  await shot(page, '10-executed-notebook');

  // The notebook's toolbar button: the dialog, prefilled.
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.commands.execute('docmanager:open', { path: 'study/chain.ipynb' });
  });
  await expect(page.locator('.jp-mod-current.lm-TabBar-tab')).toContainText('chain.ipynb');
  await page.locator('.jp-NotebookPanel:visible .qhpc-run-batch-button').click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('Run study/chain.ipynb as a batch job');
  await expect(dialog.locator('input[name="qpus"]')).toHaveValue('1');
  await expect(dialog.locator('select[name="job_class"]')).toHaveValue('production');
  await expect(dialog.locator('input[name="parameter-omega"]')).toHaveValue('2');
  await expect(dialog.locator('input[name="parameter-label"]')).toHaveValue('dev');
  await dialog.locator('input[name="parameter-omega"]').fill('3.5');
  await dialog.locator('input[name="time_limit"]').fill('0:10:00');
  await shot(page, '11-run-dialog');
  await dialog.getByRole('button', { name: 'Submit' }).click();
  // No cluster here: the batch system refuses, and the dialog says so in its words.
  const refusal = page.locator('.jp-Dialog', { hasText: 'The batch run was refused' });
  await expect(refusal).toBeVisible();
  const said = (await refusal.locator('.jp-Dialog-body').textContent()) ?? '';
  expect(said.length).toBeGreaterThan(10);
  console.log(`batch submission refused: ${said}`);
  await shot(page, '12-run-refused');
  await refusal.getByRole('button').last().click();
  await expect(section.locator('li.qhpc-batch')).toHaveCount(2); // nothing submitted
});

test('a scheduler that dies shows offline, dated and counting down to the next try', async ({
  page,
  request
}) => {
  // Last in this file: the scheduler does not come back.
  expect(SCHEDULER_PID).toBeGreaterThan(0);
  await page.sidebar.openTab(SIDEBAR);
  const sidebar = page.locator(`#${SIDEBAR}`);
  const card = sidebar.locator(`.qhpc-target[data-target="${TARGET}"]`);
  const live = sidebar.locator('.qhpc-live');
  await expect(live).toHaveAttribute('data-state', 'live');
  const job = await submit(request, 10);
  const row = sidebar.locator(`li[data-job-id="${job.id}"]`);
  await expect(row).toHaveAttribute('data-status', 'DONE');
  await expect(row).toHaveAttribute('data-stale', 'false');

  process.kill(SCHEDULER_PID, 'SIGKILL');
  await expect(card.locator('.qhpc-badge')).toHaveText('offline');
  await expect(live).toHaveAttribute('data-state', 'offline');
  await expect(live).toHaveText('offline');
  await expect(card.locator('.qhpc-default')).toHaveText('default, unreachable');
  await expect(sidebar.locator('.qhpc-stale-line')).toHaveText(
    new RegExp(`^${TARGET} does not answer: its jobs as of \\d\\d:\\d\\d:\\d\\d$`)
  );
  await expect(row).toHaveAttribute('data-stale', 'true');
  await expect(row).toHaveAttribute('data-status', 'DONE'); // still listed, as it last was
  await expect(page.locator('.qhpc-status-item .qhpc-badge')).toHaveText('offline');

  // The delay to the next try counts down between the server's retries (which grow to 10 s).
  const retry = card.locator('.qhpc-retry');
  const seen: string[] = [];
  await expect
    .poll(
      async () => {
        const text = (await retry.textContent()) ?? '';
        if (seen[seen.length - 1] !== text) {
          seen.push(text);
        }
        const seconds = seen.map(t => Number(/retrying in (\d+) s/.exec(t)?.[1] ?? NaN));
        return seconds.some((n, i) => i > 0 && n === seconds[i - 1] - 1);
      },
      { timeout: 60000, intervals: [250] }
    )
    .toBe(true);
  await shot(page, '08-scheduler-offline');
});

/**
 * The "QPU" sidebar: each target's state, calibration and queue, then the user's jobs.
 */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IJob, IQueue, IQuota, IReservation, ITarget } from './api';
import { UNIT_NAMES } from './generated.js';
import { BatchRuns } from './batch';
import { clockTime, duration, expectedTimes, position, setsDone } from './format.js';
import { IReceived, QpuModel, elapsed, isFinal } from './model';
import { qpuIcon } from './icon';

const STATE_LABELS: Record<string, string> = {
  ONLINE: 'online',
  CALIBRATING: 'calibrating',
  MAINTENANCE: 'maintenance',
  OFFLINE: 'offline'
};

export function stateLabel(state: string | null): string {
  return STATE_LABELS[state ?? ''] ?? (state ? state.toLowerCase() : 'unknown');
}

/** "retrying in 4 s", counted down from when the delay was told; "retrying now" after. */
function retrying(delay_s: number, received: number): string {
  const left = delay_s - elapsed(received);
  return left > 0.5 ? `retrying in ${duration(left)}` : 'retrying now…';
}

export function StateBadge(props: { state: string | null }): JSX.Element {
  const label = stateLabel(props.state);
  return (
    <span className={`qhpc-badge qhpc-state-${label}`} data-state={label}>
      {label}
    </span>
  );
}

function Calibration(props: { target: IReceived<ITarget> }): JSX.Element | null {
  const { value, received } = props.target;
  const since = elapsed(received);
  if (value.state === 'CALIBRATING') {
    return (
      <div className="qhpc-row">
        Calibrating now
        {value.calibration_duration_s
          ? ` (takes about ${duration(value.calibration_duration_s)})`
          : ''}
      </div>
    );
  }
  if (value.calibration_age_s === null || value.calibration_age_s === undefined) {
    return null;
  }
  const next = value.next_calibration_in_s;
  return (
    <div className="qhpc-row">
      <span title="Time since the device was last calibrated">
        Calibrated {duration(value.calibration_age_s + since)} ago
      </span>
      {next !== null && next !== undefined && (
        <span title="The next calibration window: no job runs into it">
          {' · next in '}
          {duration(next - since)}
        </span>
      )}
    </div>
  );
}

const OWNER_LABELS: Record<string, string> = {
  user: 'user',
  account: 'Slurm account',
  slurm_job: 'Slurm job'
};

/** Whom the QPU is reserved for and when: only their work runs in the window. */
function Reservation(props: { reservation?: IReservation | null }): JSX.Element | null {
  const r = props.reservation;
  if (!r || r.ends_at * 1000 <= Date.now()) {
    return null;
  }
  const now = r.starts_at * 1000 <= Date.now();
  const owner = `${OWNER_LABELS[r.owner_kind] ?? r.owner_kind} ${r.owner}`;
  const when = `${clockTime(r.starts_at * 1000)}–${clockTime(r.ends_at * 1000)}`;
  return (
    <div
      className="qhpc-row qhpc-reservation"
      data-active={now}
      title="Only the owner's jobs run in a reservation; other jobs wait for its end"
    >
      {now ? 'Reserved now' : 'Reserved'} for {owner}, {when}
    </div>
  );
}

/**
 * Whether a job runs and how many wait (every user's), per class: from the scheduler's
 * `queue` event, else (before its first one) from `GET /device`, whose depth counts the
 * running job, anyone's, too.
 */
function QueueDepth(props: { queue?: IQueue; target: ITarget }): JSX.Element | null {
  const { queue, target } = props;
  let waiting: number;
  let runs: boolean;
  if (queue) {
    waiting = queue.waiting;
    runs = queue.running !== null;
  } else if (target.queue_depth) {
    const total = Object.values(target.queue_depth).reduce((sum, n) => sum + n, 0);
    runs = Boolean(target.running) || (target.running_job ?? null) !== null;
    waiting = total - (runs ? 1 : 0);
  } else {
    return null;
  }
  const running = queue?.running;
  return (
    <div
      className="qhpc-queue"
      title="Jobs running and waiting, all users; waiting ones per class"
      data-waiting={waiting}
    >
      <span className="qhpc-queue-total">
        {runs ? `1 running, ${waiting} waiting` : waiting ? `${waiting} waiting` : 'Queue empty'}
      </span>
      {Object.entries(queue?.depth ?? {}).map(([name, count]) => (
        <span key={name} className="qhpc-queue-class" data-class={name}>
          {name} <b>{count}</b>
        </span>
      ))}
      {running && (
        <span className="qhpc-queue-running" data-mine={running.mine}>
          running: {running.mine ? `my job #${running.job_id}` : running.job_class}
        </span>
      )}
    </div>
  );
}

/**
 * The discovery default, as a kernel treats it: cells without --target run there while it
 * answers; a kernel that finds it unreachable runs them on its local emulator instead (one
 * that already sent work there refuses new work until it is back).
 */
/** One line per quota charging my jobs: use against budget, and when it resets. */
function Quotas(props: { quotas?: IQuota[] }): JSX.Element | null {
  if (!props.quotas || props.quotas.length === 0) {
    return null;
  }
  const amount = (n: number): string => String(Math.round(n * 10) / 10);
  return (
    <>
      {props.quotas.map(q => {
        const whose = q.kind === 'user' ? 'My quota' : `Account ${q.subject}`;
        const unit = UNIT_NAMES[q.unit] ?? q.unit;
        const period = /^\d+s$/.test(q.period) ? `${q.period.slice(0, -1)} s` : q.period;
        return (
          <div
            key={`${q.kind}:${q.subject}:${q.unit}`}
            className="qhpc-row qhpc-quota"
            data-spent={q.used >= q.budget}
            title={`resets at ${q.resets_at}`}
          >
            {whose}: {amount(q.used)} of {amount(q.budget)} {unit} this {period}
          </div>
        );
      })}
    </>
  );
}

function DefaultBadge(props: { reachable: boolean }): JSX.Element {
  return props.reachable ? (
    <span className="qhpc-default" data-reachable="true" title="Cells without --target run here">
      default
    </span>
  ) : (
    <span
      className="qhpc-default qhpc-default-off"
      data-reachable="false"
      title="Unreachable: a kernel that starts now runs cells without --target on its local emulator; one that already used this target refuses them until it answers"
    >
      default, unreachable
    </span>
  );
}

function TargetCard(props: {
  target: IReceived<ITarget>;
  queue: IQueue | undefined;
}): JSX.Element {
  const { value: t, received } = props.target;
  const retry = t.retry_in_s;
  return (
    <div className="qhpc-target" data-target={t.name} data-reachable={t.reachable}>
      <div className="qhpc-target-head">
        <span className="qhpc-target-name" title={t.origin}>
          {t.name}
          {t.default && !t.routed && <DefaultBadge reachable={t.reachable} />}
          {t.routed && (
            <span
              className="qhpc-default qhpc-routed"
              data-reachable={t.reachable}
              title="One of this job's QPUs: a cell without --target goes to whichever accepts its program and finishes it first"
            >
              auto
            </span>
          )}
        </span>
        <StateBadge state={t.state} />
      </div>
      <div className="qhpc-row qhpc-dim">
        {t.device ?? t.type}
        {t.url ? ` · ${t.url}` : ''}
      </div>
      {t.reachable ? (
        <>
          <Calibration target={props.target} />
          <Reservation reservation={t.next_reservation} />
          <QueueDepth queue={props.queue} target={t} />
          {t.draining && <div className="qhpc-note">Draining: queued jobs wait.</div>}
          <Quotas quotas={t.quotas} />
        </>
      ) : null}
      {(t.message || (retry !== null && retry !== undefined)) && (
        <div className="qhpc-note">
          {t.message}
          {retry !== null && retry !== undefined && (
            <span className="qhpc-retry"> · {retrying(retry, received)}</span>
          )}
        </div>
      )}
    </div>
  );
}

function JobRow(props: {
  job: IReceived<IJob>;
  model: QpuModel;
  stale: boolean;
}): JSX.Element {
  const { value: job, received } = props.job;
  const [canceling, setCanceling] = React.useState(false);
  // A sweep counts its sets (its shots are theirs in all), any other job its shots.
  const [done, total] =
    job.sets !== null ? [job.sets_done ?? 0, job.sets] : [job.shots_done, job.shots];
  const percent = total ? Math.round((100 * done) / total) : 0;
  const progress =
    job.sets !== null ? setsDone(done, total) : `${job.shots_done}/${job.shots} shots`;
  let where = '';
  if (job.status === 'RUNNING') {
    where = position(0);
  } else if (job.status === 'PENDING' && job.position !== null) {
    where = position(job.position, props.model.queues[job.target]?.waiting);
  }
  const target = props.model.targets.find(t => t.value.name === job.target)?.value;
  const times =
    !isFinal(job) && !props.stale
      ? expectedTimes(job, target?.time_per_shot_s, elapsed(received)).join(' · ')
      : '';
  return (
    <li
      className={`qhpc-job${props.stale ? ' qhpc-stale' : ''}`}
      data-stale={props.stale}
      data-job-id={job.id}
      data-target={job.target}
      data-status={job.status}
      data-position={job.position ?? ''}
    >
      <div className="qhpc-job-head">
        <span className="qhpc-job-title" title={`${job.format}, class ${job.job_class}`}>
          #{job.id} {job.name ?? ''}
        </span>
        <span className={`qhpc-status qhpc-status-${job.status.toLowerCase()}`}>
          {job.status.toLowerCase()}
        </span>
      </div>
      <div className="qhpc-row qhpc-dim">
        {job.target} · {job.job_class}
        {where && <span className="qhpc-position"> · {where}</span>}
        {times && <span className="qhpc-eta"> · {times}</span>}
      </div>
      <div className="qhpc-progress" title={`${job.shots_done} of ${job.shots} shots`}>
        <div className="qhpc-progress-bar" style={{ width: `${percent}%` }} />
        <span className="qhpc-progress-text">{progress}</span>
      </div>
      {job.error && job.status !== 'DONE' && <div className="qhpc-note">{job.error}</div>}
      {!isFinal(job) && (
        <button
          className="qhpc-cancel"
          title={`Cancel job ${job.id} on ${job.target}`}
          disabled={canceling}
          onClick={async () => {
            setCanceling(true);
            await props.model.cancel(job);
            setCanceling(false);
          }}
        >
          {canceling ? 'Canceling…' : 'Cancel'}
        </button>
      )}
    </li>
  );
}

function Jobs(props: { model: QpuModel }): JSX.Element {
  const { model } = props;
  const jobs = model.visibleJobs;
  const errors = Object.entries(model.jobErrors);
  const stale: Record<string, number> = {};
  for (const target of new Set(jobs.map(j => j.value.target))) {
    const since = model.staleSince(target);
    if (since !== null) {
      stale[target] = since;
    }
  }
  return (
    <section className="qhpc-section">
      <h3>My jobs</h3>
      {errors.map(([target, message]) => (
        <div key={target} className="qhpc-note qhpc-error-line">
          {target}: {message}
        </div>
      ))}
      {Object.entries(stale).map(([target, since]) => (
        <div key={target} className="qhpc-note qhpc-stale-line" data-target={target}>
          {target} does not answer: its jobs as of {clockTime(since)}
        </div>
      ))}
      {jobs.length === 0 ? (
        <div className="qhpc-empty">
          No jobs yet. A <code>%%qpu</code> cell or <code>qhpc_lab.submit()</code> queues one
          and it appears here.
        </div>
      ) : (
        <ul className="qhpc-jobs">
          {jobs.map(j => (
            <JobRow
              key={`${j.value.target}/${j.value.id}`}
              job={j}
              model={model}
              stale={j.value.target in stale}
            />
          ))}
        </ul>
      )}
    </section>
  );
}

/**
 * Whether what the sidebar shows is current: live (this page follows the server, which
 * follows the active target's scheduler), offline (that scheduler does not answer), or
 * reconnecting (this page lost the Jupyter server), with the countdown to the next try.
 */
function Live(props: { model: QpuModel }): JSX.Element {
  const { model } = props;
  const active = model.activeTarget?.value;
  let state: string;
  let label: string;
  let title: string;
  if (!model.live) {
    state = 'reconnecting';
    label =
      model.retryAt === null
        ? 'reconnecting…'
        : `reconnecting, ${retrying((model.retryAt - Date.now()) / 1000, Date.now())}`;
    title = 'This page lost the Jupyter server: what it shows may be out of date';
  } else if (active && !active.reachable) {
    state = 'offline';
    label = 'offline';
    title = `${active.name} does not answer: its last known state is shown`;
  } else {
    state = 'live';
    label = 'live';
    title = 'Live: updates as they happen';
  }
  return (
    <span className={`qhpc-live qhpc-live-${state}`} data-state={state} title={title}>
      {label}
    </span>
  );
}

function Panel(props: { model: QpuModel; open: (path: string) => void }): JSX.Element {
  const { model } = props;
  if (model.phase === 'loading') {
    return (
      <div className="qhpc-placeholder qhpc-loading">
        <div className="qhpc-spinner" />
        Looking for this Lab's QPUs…
      </div>
    );
  }
  if (model.phase === 'error') {
    return (
      <div className="qhpc-placeholder qhpc-error">
        <b>The QPU service did not answer.</b>
        <div>{model.error}</div>
        <div className="qhpc-dim">
          It is the qhpc_lab server extension: <code>jupyter server extension list</code>{' '}
          tells whether it is enabled.
        </div>
        <button className="jp-Button jp-mod-styled jp-mod-accept" onClick={() => model.refresh()}>
          Retry
        </button>
      </div>
    );
  }
  const qpus = model.targets.filter(t => t.value.kind !== 'emulator');
  return (
    <>
      <section className="qhpc-section">
        <h3>
          Targets
          <Live model={model} />
        </h3>
        {qpus.length === 0 ? (
          <div className="qhpc-empty">
            <b>No QPU for this Lab.</b> Looked at {model.sources.join(' and ')}. Programs run
            on the local emulator inside each kernel.
          </div>
        ) : (
          qpus.map(t => (
            <TargetCard key={t.value.name} target={t} queue={model.queues[t.value.name]} />
          ))
        )}
        {model.problems.map(problem => (
          <div key={problem} className="qhpc-note">
            {problem}
          </div>
        ))}
      </section>
      <Jobs model={model} />
      <BatchRuns model={model} open={props.open} />
    </>
  );
}

export class QpuSidebar extends ReactWidget {
  /** `open` opens a file of the Jupyter root in Lab (an executed notebook). */
  constructor(
    private readonly _model: QpuModel,
    private readonly _open: (path: string) => void
  ) {
    super();
    this.id = 'qhpc-qpu-sidebar';
    this.addClass('qhpc-sidebar');
    this.title.icon = qpuIcon;
    this.title.caption = 'QPU: device state, calibration, queue, my jobs and batch runs';
  }

  render(): JSX.Element {
    return (
      <div className="qhpc-panel">
        <header className="qhpc-header">QPU</header>
        <UseSignal signal={this._model.changed}>
          {() => (
            <UseSignal signal={this._model.ticked}>
              {() => <Panel model={this._model} open={this._open} />}
            </UseSignal>
          )}
        </UseSignal>
      </div>
    );
  }
}

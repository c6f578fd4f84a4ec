/**
 * The "QPU" sidebar: each target's state, calibration and queue, then the user's jobs.
 */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IJob, IQueue, ITarget } from './api';
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

/** 42 s, 3 min, 1.5 h: as precise as a glance needs. */
export function duration(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < 90) {
    return `${Math.round(s)} s`;
  }
  if (s < 5400) {
    return `${Math.round(s / 60)} min`;
  }
  return `${(s / 3600).toFixed(1)} h`;
}

export function ordinal(position: number): string {
  const tens = position % 100;
  const suffix =
    tens >= 11 && tens <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][position % 10] ?? 'th';
  return `${position}${suffix}`;
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

/**
 * Jobs waiting (every user's, the running one not counted), per class, and what runs: from
 * the scheduler's `queue` event, else (before its first one) the total from `GET /device`.
 */
function QueueDepth(props: { queue?: IQueue; target: ITarget }): JSX.Element | null {
  const { queue, target } = props;
  let waiting: number;
  if (queue) {
    waiting = queue.waiting;
  } else if (target.queue_depth) {
    const total = Object.values(target.queue_depth).reduce((sum, n) => sum + n, 0);
    waiting = total - (target.running_job !== null && target.running_job !== undefined ? 1 : 0);
  } else {
    return null;
  }
  const running = queue?.running;
  return (
    <div
      className="qhpc-queue"
      title="Jobs waiting, all users, per class; the running job is not counted"
      data-waiting={waiting}
    >
      <span className="qhpc-queue-total">
        {waiting === 0 ? 'Queue empty' : `${waiting} in queue`}
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

function TargetCard(props: {
  target: IReceived<ITarget>;
  queue: IQueue | undefined;
}): JSX.Element {
  const t = props.target.value;
  return (
    <div className="qhpc-target" data-target={t.name}>
      <div className="qhpc-target-head">
        <span className="qhpc-target-name" title={t.origin}>
          {t.name}
          {t.default && (
            <span className="qhpc-default" title="Cells without --target run here">
              default
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
          <QueueDepth queue={props.queue} target={t} />
          {t.draining && <div className="qhpc-note">Draining: queued jobs wait.</div>}
        </>
      ) : null}
      {t.message && <div className="qhpc-note">{t.message}</div>}
    </div>
  );
}

function JobRow(props: { job: IReceived<IJob>; model: QpuModel }): JSX.Element {
  const { value: job, received } = props.job;
  const [canceling, setCanceling] = React.useState(false);
  const percent = job.shots ? Math.round((100 * job.shots_done) / job.shots) : 0;
  let where = '';
  if (job.status === 'RUNNING') {
    where = 'running';
  } else if (job.status === 'PENDING' && job.position !== null) {
    where = `${ordinal(job.position)} in queue`;
  }
  const eta =
    !isFinal(job) && job.eta_s !== null ? `ETA ${duration(job.eta_s - elapsed(received))}` : '';
  return (
    <li
      className="qhpc-job"
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
        {eta && <span className="qhpc-eta"> · {eta}</span>}
      </div>
      <div className="qhpc-progress" title={`${job.shots_done} of ${job.shots} shots`}>
        <div className="qhpc-progress-bar" style={{ width: `${percent}%` }} />
        <span className="qhpc-progress-text">
          {job.shots_done}/{job.shots} shots
        </span>
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
  return (
    <section className="qhpc-section">
      <h3>My jobs</h3>
      {errors.map(([target, message]) => (
        <div key={target} className="qhpc-note qhpc-error-line">
          {target}: {message}
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
            <JobRow key={`${j.value.target}/${j.value.id}`} job={j} model={model} />
          ))}
        </ul>
      )}
    </section>
  );
}

function Panel(props: { model: QpuModel }): JSX.Element {
  const { model } = props;
  if (model.phase === 'loading') {
    return (
      <div className="qhpc-placeholder qhpc-loading">
        <div className="qhpc-spinner" />
        Looking for this session's QPUs…
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
          <span
            className={`qhpc-live ${model.live ? 'qhpc-live-on' : ''}`}
            title={model.live ? 'Live: updates as they happen' : 'Reconnecting…'}
          >
            {model.live ? 'live' : 'reconnecting…'}
          </span>
        </h3>
        {qpus.length === 0 ? (
          <div className="qhpc-empty">
            <b>No QPU in this session.</b> Looked at {model.sources.join(' and ')}. Programs run
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
    </>
  );
}

export class QpuSidebar extends ReactWidget {
  constructor(private readonly _model: QpuModel) {
    super();
    this.id = 'qhpc-qpu-sidebar';
    this.addClass('qhpc-sidebar');
    this.title.icon = qpuIcon;
    this.title.caption = 'QPU: device state, calibration, queue and my jobs';
  }

  render(): JSX.Element {
    return (
      <div className="qhpc-panel">
        <header className="qhpc-header">QPU</header>
        <UseSignal signal={this._model.changed}>
          {() => (
            <UseSignal signal={this._model.ticked}>
              {() => <Panel model={this._model} />}
            </UseSignal>
          )}
        </UseSignal>
      </div>
    );
  }
}

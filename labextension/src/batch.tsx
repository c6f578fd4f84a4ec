/**
 * Batch work in the QPU sidebar: the "Batch runs" section (notebook runs and cluster
 * emulations, as the batch system and the run describe them) and the "Run as batch job"
 * dialog's form.
 */
import { Dialog } from '@jupyterlab/apputils';
import * as React from 'react';
import { Widget } from '@lumino/widgets';

import { IBatchEntry, IRunForm } from './api';
import type { IQPUJobRef } from './generated.js';
import { clockTime, duration } from './format.js';
import { QpuModel } from './model';

/** A batch state in the sidebar's words (those of the QPU jobs' statuses). */
const BATCH_WORDS: Record<string, string> = {
  PENDING: 'pending',
  RUNNING: 'running',
  COMPLETED: 'done',
  FAILED: 'failed',
  CANCELLED: 'canceled'
};

export function batchWord(entry: IBatchEntry): string {
  const state = entry.batch?.state;
  return state ? BATCH_WORDS[state] ?? state.toLowerCase() : 'unknown';
}

/** "starts about 18:20:05 (in 4 min)", from the batch system's estimate. */
function startEstimate(iso: string): string {
  const at = Date.parse(iso);
  const left = (at - Date.now()) / 1000;
  return left > 0
    ? `starts about ${clockTime(at)} (in ${duration(left)})`
    : `was to start at ${clockTime(at)}`;
}

/** Where the batch job is, in one line: why it waits, where it runs, why it failed. */
function Where(props: { entry: IBatchEntry }): JSX.Element | null {
  const { entry } = props;
  const job = entry.batch;
  if (!job) {
    return entry.error ? (
      <div className="qhpc-note qhpc-error-line qhpc-batch-where">
        state unknown: {entry.error}
      </div>
    ) : null;
  }
  const parts: string[] = [];
  if (job.state === 'PENDING') {
    parts.push(job.reason ? `waiting: ${job.reason}` : 'waiting');
    if (job.start_estimate) {
      parts.push(startEstimate(job.start_estimate));
    }
  } else if (job.state === 'RUNNING') {
    parts.push(job.node ? `running on ${job.node}` : 'running');
    if (job.gpus) {
      parts.push(job.gpus);
    }
  } else if (job.state === 'FAILED' && !entry.failure) {
    const why = job.limit ? `ended at its ${job.limit}` : job.reason;
    parts.push(why ?? `exit code ${job.exit_code}`);
  } else if (job.node) {
    parts.push(`ran on ${job.node}`);
  }
  return parts.length ? (
    <div className="qhpc-row qhpc-batch-where" data-state={job.state}>
      {parts.join(' · ')}
    </div>
  ) : null;
}

/** A notebook run's QPU jobs: live from the sidebar's job list where it has them. */
function QpuJobs(props: { refs: IQPUJobRef[]; model: QpuModel }): JSX.Element | null {
  if (props.refs.length === 0) {
    return null;
  }
  return (
    <div className="qhpc-row qhpc-batch-qpu-jobs">
      QPU jobs:{' '}
      {props.refs.map(ref => {
        const live = props.model.liveJob(ref.target, ref.id);
        const status = (live?.status ?? ref.status ?? 'unknown').toLowerCase();
        return (
          <span
            key={`${ref.target}/${ref.id}`}
            className={`qhpc-batch-qpu-job qhpc-status-${status}`}
            data-job-id={ref.id}
            data-status={status}
            title={ref.target ? `on ${ref.target}` : undefined}
          >
            #{ref.id} {status}
          </span>
        );
      })}
    </div>
  );
}

function qpuShare(qpus: IBatchEntry['qpus']): string {
  if (qpus === null || qpus === undefined) {
    return '';
  }
  if (typeof qpus === 'number') {
    return `${qpus} QPU slot${qpus === 1 ? '' : 's'}`;
  }
  return Object.entries(qpus)
    .map(([name, slots]) => `${name} ×${slots}`)
    .join(', ');
}

function BatchRow(props: {
  entry: IBatchEntry;
  model: QpuModel;
  open: (path: string) => void;
}): JSX.Element {
  const { entry, model } = props;
  const [canceling, setCanceling] = React.useState(false);
  const word = batchWord(entry);
  const about = [
    `${entry.system} job ${entry.job_id}`,
    entry.job_class ?? '',
    qpuShare(entry.qpus)
  ].filter(Boolean);
  return (
    <li
      className="qhpc-job qhpc-batch"
      data-batch-id={entry.id}
      data-kind={entry.kind}
      data-state={entry.batch?.state ?? 'UNKNOWN'}
      data-finished={entry.finished}
    >
      <div className="qhpc-job-head">
        <span className="qhpc-job-title" title={entry.title}>
          {entry.kind === 'emulation'
            ? `Emulation ${entry.title}`
            : entry.notebook ?? entry.title.split('/').pop()}
        </span>
        <span className={`qhpc-status qhpc-status-${word}`}>{word}</span>
      </div>
      <div className="qhpc-row qhpc-dim">{about.join(' · ')}</div>
      <Where entry={entry} />
      {entry.failure && (
        <div className="qhpc-note qhpc-error-line qhpc-batch-failure">{entry.failure}</div>
      )}
      {entry.kind === 'emulation' && entry.engine && (
        <div className="qhpc-row qhpc-batch-engine">
          {entry.engine}
          {entry.approximation ? ` · ${entry.approximation}` : ''}
        </div>
      )}
      <QpuJobs refs={entry.qpu_jobs} model={model} />
      {entry.executed && (
        <button
          className="qhpc-link qhpc-batch-open"
          title={`Open ${entry.executed}`}
          onClick={() => props.open(entry.executed as string)}
        >
          Open executed notebook
        </button>
      )}
      {!entry.finished && entry.batch && (
        <button
          className="qhpc-cancel"
          title={`Cancel ${entry.system} job ${entry.job_id}`}
          disabled={canceling}
          onClick={async () => {
            setCanceling(true);
            await model.cancelRun(entry);
            setCanceling(false);
          }}
        >
          {canceling ? 'Canceling…' : 'Cancel'}
        </button>
      )}
    </li>
  );
}

export function BatchRuns(props: {
  model: QpuModel;
  open: (path: string) => void;
}): JSX.Element {
  const { model } = props;
  return (
    <section className="qhpc-section qhpc-batch-runs">
      <h3>Batch runs</h3>
      {model.batchError && (
        <div className="qhpc-note qhpc-error-line qhpc-batch-error">{model.batchError}</div>
      )}
      {model.batch.length === 0 ? (
        <div className="qhpc-none qhpc-batch-none">
          No batch runs. <b>Run as batch job</b> in a notebook's toolbar runs it as a
          production job holding a QPU share; <code>qhpc run</code> does the same from a
          terminal.
        </div>
      ) : (
        <ul className="qhpc-jobs">
          {model.batch.map(entry => (
            <BatchRow key={entry.id} entry={entry} model={model} open={props.open} />
          ))}
        </ul>
      )}
    </section>
  );
}

/** A parameter's default as the field shows it: text as it is, anything else as JSON. */
function shown(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** A field's text as a value: JSON where it reads as JSON (numbers, lists), else text. */
function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * The dialog's form: QPU share, time limit, class, and one field per parameter prefilled with
 * its default; only the parameters changed are sent (the others keep the notebook's own).
 */
export class RunDialogBody extends Widget implements Dialog.IBodyWidget<IRunForm> {
  constructor(
    private readonly _path: string,
    parameters: Record<string, unknown>,
    classes: string[]
  ) {
    super();
    this.addClass('qhpc-run-dialog');
    const form = document.createElement('form');
    form.addEventListener('submit', event => event.preventDefault());
    const slots = this._input('number', '1', { min: '0', step: '1' });
    const limit = this._input('text', '', { placeholder: '1:00:00' });
    form.append(
      this._field('QPU slots', 'qpus', slots, 'The share of the QPU the batch job holds'),
      this._field('Time limit', 'time_limit', limit, "Empty: the site's default"),
      this._field('Class', 'job_class', this._select(classes), 'The class of its QPU jobs')
    );
    const names = Object.keys(parameters);
    const legend = document.createElement('div');
    legend.className = 'qhpc-run-parameters-title';
    legend.textContent = names.length
      ? 'Parameters (the notebook\'s cell tagged "parameters")'
      : 'No cell tagged "parameters": the notebook runs as it is.';
    form.append(legend);
    for (const name of names) {
      const input = this._input('text', shown(parameters[name]), {});
      input.dataset.parameter = name;
      input.dataset.initial = input.value;
      const title = `Default: ${shown(parameters[name])}`;
      form.append(this._field(name, `parameter-${name}`, input, title));
    }
    this.node.append(form);
  }

  getValue(): IRunForm {
    const value = (name: string): string =>
      (this.node.querySelector(`[name="${name}"]`) as HTMLInputElement).value.trim();
    const parameters: Record<string, unknown> = {};
    this.node.querySelectorAll<HTMLInputElement>('input[data-parameter]').forEach(input => {
      if (input.value !== input.dataset.initial) {
        parameters[input.dataset.parameter as string] = parsed(input.value);
      }
    });
    return {
      path: this._path,
      qpus: Number(value('qpus') || '1'),
      time_limit: value('time_limit') || null,
      job_class: value('job_class'),
      parameters
    };
  }

  private _field(
    label: string,
    name: string,
    control: HTMLElement,
    title: string
  ): HTMLElement {
    const row = document.createElement('label');
    row.className = 'qhpc-run-field';
    row.title = title;
    const text = document.createElement('span');
    text.textContent = label;
    control.setAttribute('name', name);
    row.append(text, control);
    return row;
  }

  private _input(
    type: string,
    value: string,
    attributes: Record<string, string>
  ): HTMLInputElement {
    const input = document.createElement('input');
    input.type = type;
    input.value = value;
    input.className = 'jp-mod-styled';
    for (const [key, val] of Object.entries(attributes)) {
      input.setAttribute(key, val);
    }
    return input;
  }

  private _select(options: string[]): HTMLSelectElement {
    const select = document.createElement('select');
    select.className = 'jp-mod-styled';
    for (const option of options) {
      const chosen = option === 'production';
      select.append(new Option(option, option, chosen, chosen));
    }
    return select;
  }
}

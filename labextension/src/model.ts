/**
 * What the sidebar and the status bar show, kept current by the event stream.
 *
 * The REST routes are read when the stream (re)opens and when a scheduler's stream restarts
 * without resuming (`reset`); between those nothing is fetched. A job's own changes come with
 * `job` events, every job's place in line and the queue's depth with `queue` events. Ages and
 * countdowns advance on a local one-second tick from the moment each value was received.
 *
 * What a target's scheduler last said is kept while it cannot be reached (or while this page
 * cannot reach the Jupyter server), marked with the time it was last current (`staleSince`).
 *
 * The user's batch runs (notebook runs and cluster emulations) are read with the rest and
 * kept current by `batch` events: the server asks the batch system while a run is active.
 */
import { ISignal, Signal } from '@lumino/signaling';

import {
  IBatchEntry,
  IEvent,
  IJob,
  IJobsReply,
  IQueue,
  ITarget,
  IRunForm,
  cancelJob,
  cancelRun,
  followEvents,
  getBatch,
  getJobs,
  getTargets,
  submitRun
} from './api';
import { FINAL_STATUSES } from './generated.js';

export type Phase = 'loading' | 'ready' | 'error';

/** A value from the server and the browser time it arrived, to age it locally. */
export interface IReceived<T> {
  value: T;
  received: number;
}

const FINAL = new Set(FINAL_STATUSES);
const RECENT_FINISHED = 5;
const RETRY_MAX_MS = 10000;

export function isFinal(job: IJob): boolean {
  return FINAL.has(job.status);
}

/** Seconds since `received`, added to a server-side age. */
export function elapsed(received: number): number {
  return (Date.now() - received) / 1000;
}

function jobKey(job: IJob): string {
  return `${job.target}/${job.id}`;
}

/**
 * A fresh list from the server, except where an event newer than the request (received
 * after `asked`) already told more: a reply may have left before that event was published
 * (a job submitted meanwhile is kept too).
 */
function merge<T>(
  current: IReceived<T>[],
  fresh: T[],
  asked: number,
  key: (value: T) => string
): IReceived<T>[] {
  const newer = new Map(
    current.filter(c => c.received > asked).map(c => [key(c.value), c])
  );
  const now = Date.now();
  const listed = new Set(fresh.map(key));
  const unlisted = [...newer.values()].filter(c => !listed.has(key(c.value)));
  return [
    ...unlisted,
    ...fresh.map(value => newer.get(key(value)) ?? { value, received: now })
  ];
}

export class QpuModel {
  phase: Phase = 'loading';
  error = '';
  live = false;
  targets: IReceived<ITarget>[] = [];
  defaultTarget: string | null = null;
  sources: string[] = [];
  problems: string[] = [];
  jobs: IReceived<IJob>[] = [];
  jobErrors: Record<string, string> = {};
  /** Each scheduler's latest queue, by target name. */
  queues: Record<string, IQueue> = {};
  /** When this page will next try the Jupyter server's event stream (while not live). */
  retryAt: number | null = null;
  /** My batch runs, newest first. */
  batch: IBatchEntry[] = [];
  /** Why the batch runs could not be read or a Cancel failed; empty when they could. */
  batchError = '';

  /** A batch run this page saw unfinished has ended (done, failed or canceled). */
  get runEnded(): ISignal<this, IBatchEntry> {
    return this._runEnded;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Ticks once a second so ages and countdowns move without asking the server. */
  get ticked(): ISignal<this, void> {
    return this._ticked;
  }

  /** The target new programs go to: the discovery default, else the first one. */
  get activeTarget(): IReceived<ITarget> | null {
    const qpus = this.targets.filter(t => t.value.kind !== 'emulator');
    return qpus.find(t => t.value.name === this.defaultTarget) ?? qpus[0] ?? null;
  }

  /**
   * Since when what is shown of `target` may be out of date (browser time), or null while
   * it is current: the target's scheduler does not answer, or this page lost the server.
   */
  staleSince(target: string): number | null {
    const entry = this.targets.find(t => t.value.name === target);
    const current = this._current[target] ?? null;
    if (!this.live && this._lostAt !== null) {
      return Math.min(this._lostAt, current ?? this._lostAt);
    }
    return entry && !entry.value.reachable ? current : null;
  }

  /** Queued and running jobs first (oldest first), then the latest finished ones. */
  get visibleJobs(): IReceived<IJob>[] {
    const active = this.jobs.filter(j => !isFinal(j.value)).reverse();
    const finished = this.jobs.filter(j => isFinal(j.value)).slice(0, RECENT_FINISHED);
    return [...active, ...finished];
  }

  /** My job that will run soonest: a running one, else the best-placed queued one. */
  get nextJob(): IJob | null {
    const rank = (job: IJob): number =>
      job.status === 'RUNNING' ? -1 : job.position ?? Number.MAX_SAFE_INTEGER;
    const active = this.jobs.map(j => j.value).filter(j => !isFinal(j));
    active.sort((a, b) => rank(a) - rank(b));
    return active[0] ?? null;
  }

  start(): void {
    this._timer = window.setInterval(() => this._ticked.emit(), 1000);
    void this.refresh();
    void this._follow();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    this._abort?.abort();
  }

  /** Read targets and jobs again (the Retry button, and each time the stream opens). */
  async refresh(): Promise<void> {
    void this._readBatch();
    const asked = Date.now();
    try {
      const [targets, jobs] = await Promise.all([getTargets(), getJobs()]);
      this.targets = merge(
        this.targets,
        targets.targets,
        asked,
        t => t.name
      );
      for (const target of targets.targets) {
        if (target.queue && !(target.name in this.queues)) {
          this.queues[target.name] = target.queue;
        }
      }
      for (const target of targets.targets) {
        this._heard(target.name, target.reachable);
      }
      this.defaultTarget = targets.default;
      this.sources = targets.sources;
      this.problems = targets.problems;
      this._mergeJobs(jobs, asked);
      this.phase = 'ready';
      this.error = '';
    } catch (error) {
      this.phase = 'error';
      this.error = (error as Error).message;
    }
    this._changed.emit();
  }

  async cancel(job: IJob): Promise<void> {
    try {
      this._upsertJob(await cancelJob(job));
    } catch (error) {
      this.jobErrors = { ...this.jobErrors, [job.target]: (error as Error).message };
    }
    this._changed.emit();
  }

  /** Submit a notebook run; the refusal's one line is thrown to the dialog. */
  async submitRun(form: IRunForm): Promise<IBatchEntry> {
    const entry = await submitRun(form);
    this._upsertBatch(entry);
    this._changed.emit();
    return entry;
  }

  async cancelRun(entry: IBatchEntry): Promise<void> {
    try {
      this._upsertBatch(await cancelRun(entry));
      this.batchError = '';
    } catch (error) {
      this.batchError = (error as Error).message;
    }
    this._changed.emit();
  }

  /** The QPU job `id` on `target` as the live job list has it, if it is there. */
  liveJob(target: string | null, id: number | string): IJob | null {
    const found = this.jobs.find(
      j => String(j.value.id) === String(id) && (target === null || j.value.target === target)
    );
    return found?.value ?? null;
  }

  private async _readBatch(): Promise<void> {
    try {
      const reply = await getBatch();
      for (const entry of reply.entries) {
        this._upsertBatch(entry);
      }
      const listed = new Set(reply.entries.map(e => e.id));
      this.batch = this.batch.filter(e => listed.has(e.id));
      this.batchError = '';
    } catch (error) {
      this.batchError = (error as Error).message;
    }
    this._changed.emit();
  }

  /** A run's new view; `runEnded` when one this page saw unfinished has finished. */
  private _upsertBatch(entry: IBatchEntry): void {
    const index = this.batch.findIndex(e => e.id === entry.id);
    if (index < 0) {
      this.batch.push(entry);
      this.batch.sort((a, b) => b.submitted_at.localeCompare(a.submitted_at));
      return;
    }
    const before = this.batch[index];
    this.batch[index] = entry;
    if (!before.finished && entry.finished) {
      this._runEnded.emit(entry);
    }
  }

  private async _follow(): Promise<void> {
    let delay = 1000;
    for (;;) {
      this._abort = new AbortController();
      try {
        await followEvents(
          () => {
            this.live = true;
            this.retryAt = null;
            this._lostAt = null;
            delay = 1000;
            void this.refresh();
          },
          event => this._apply(event),
          this._abort.signal
        );
      } catch (error) {
        if (this._abort.signal.aborted) {
          return;
        }
        if (this.phase === 'loading') {
          this.phase = 'error';
          this.error = (error as Error).message;
        }
      }
      if (this.live || this._lostAt === null) {
        this._lostAt = Date.now();
      }
      this.live = false;
      this.retryAt = Date.now() + delay;
      this._changed.emit();
      await new Promise(resolve => setTimeout(resolve, delay));
      delay = Math.min(RETRY_MAX_MS, delay * 2);
    }
  }

  private _apply(event: IEvent): void {
    if (event.kind === 'target') {
      const target = event.data as ITarget;
      const index = this.targets.findIndex(t => t.value.name === target.name);
      if (index >= 0) {
        const value = { ...this.targets[index].value, ...target };
        this.targets[index] = { value, received: Date.now() };
      }
      this._heard(target.name, target.reachable);
    } else if (event.kind === 'job') {
      const job = event.data as IJob;
      this._upsertJob(job);
      this._heard(job.target, true);
    } else if (event.kind === 'queue') {
      const { target, ...queue } = event.data as IQueue & { target: string };
      this._applyQueue(target, queue);
      this._heard(target, true);
    } else if (event.kind === 'reset') {
      void this._rereadJobs();
    } else if (event.kind === 'batch') {
      this._upsertBatch(event.data as IBatchEntry);
    }
    this._changed.emit();
  }

  /** The target's queue, and my jobs' places in it (other users' jobs are counts only). */
  private _applyQueue(name: string, queue: IQueue): void {
    const now = Date.now();
    this.queues[name] = queue;
    this.jobs = this.jobs.map(entry => {
      const job = entry.value;
      const place = queue.jobs[String(job.id)];
      if (job.target !== name || isFinal(job) || place === undefined) {
        return entry;
      }
      if (place.position === job.position && place.eta_s === job.eta_s) {
        return entry;
      }
      return { value: { ...job, position: place.position, eta_s: place.eta_s }, received: now };
    });
  }

  /** A fresh list of my jobs; a target that could not list its own keeps what it last did. */
  private _mergeJobs(reply: IJobsReply, asked: number): void {
    const failed = (entry: IReceived<IJob>): boolean => entry.value.target in reply.errors;
    const kept = this.jobs.filter(failed);
    const fresh = merge(
      this.jobs.filter(entry => !failed(entry)),
      reply.jobs,
      asked,
      jobKey
    );
    this.jobs = [...fresh, ...kept];
    this.jobErrors = reply.errors;
  }

  /** What `target` says is current now, when it answered (its `reachable`). */
  private _heard(target: string, reachable: boolean | undefined): void {
    if (reachable !== false) {
      this._current[target] = Date.now();
    }
  }

  private _upsertJob(job: IJob): void {
    const index = this.jobs.findIndex(j => jobKey(j.value) === jobKey(job));
    const entry = { value: job, received: Date.now() };
    if (index < 0) {
      this.jobs.unshift(entry);
    } else {
      this.jobs[index] = entry;
    }
  }

  /** A scheduler's stream restarted without resuming: what it missed is read again. */
  private async _rereadJobs(): Promise<void> {
    const asked = Date.now();
    try {
      this._mergeJobs(await getJobs(), asked);
      this._changed.emit();
    } catch {
      // the stream's next reconnection re-reads everything
    }
  }

  private _changed = new Signal<this, void>(this);
  private _ticked = new Signal<this, void>(this);
  private _runEnded = new Signal<this, IBatchEntry>(this);
  private _abort: AbortController | null = null;
  /** Browser time each target's facts were last known current. */
  private _current: Record<string, number> = {};
  /** When this page lost the server's event stream (null while it has it). */
  private _lostAt: number | null = null;
  private _timer = 0;
}

/**
 * The server extension's REST routes and event stream (qhpc_lab/jupyter/server).
 *
 * Requests go through ServerConnection so they carry the Jupyter login and XSRF token; the
 * event stream is read with fetch rather than EventSource for the same reason.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A target as the server extension describes it; times are seconds at `received`. */
export interface ITarget {
  name: string;
  kind: string;
  type: string;
  origin: string;
  url: string | null;
  default: boolean;
  /** One of the job's several QPU resources: cells without --target choose among them (the
   * sidebar says `auto` then, not `default`). */
  routed?: boolean;
  reachable: boolean;
  device: string | null;
  state: string | null;
  message: string;
  /** While the scheduler's stream is down: seconds until the next try, at `received`. */
  retry_in_s?: number | null;
  calibration_age_s: number | null;
  next_calibration_in_s?: number | null;
  calibration_duration_s?: number | null;
  queue_depth?: Record<string, number>;
  draining?: boolean;
  /** The running job, anyone's (`GET /device`): its class only. */
  running?: { job_class: string } | null;
  /** Its id, when it is mine. */
  running_job?: number | null;
  /** The reservation in force, else the next (`GET /device`); Unix times. */
  next_reservation?: IReservation | null;
  /** The scheduler's latest `queue` event, once its stream is followed. */
  queue?: IQueue;
  /** The quotas charging my jobs (`GET /quotas`), as of the last probe. */
  quotas?: IQuota[];
}

/** A budget of QPU-seconds or shots per period for me or my Slurm account (docs/policy.md). */
export interface IQuota {
  kind: 'user' | 'account';
  subject: string;
  unit: 'qpu_seconds' | 'shots';
  budget: number;
  period: string;
  used: number;
  resets_at: string;
}

/** The whole QPU kept for a user, a Slurm account or a Slurm job between two times. */
export interface IReservation {
  owner_kind: string;
  owner: string;
  starts_at: number;
  ends_at: number;
}

/** A scheduler's queue as its `queue` event tells this user (other users' jobs: counts only). */
export interface IQueue {
  revision: number;
  /** Jobs waiting, every user's; the running job is not counted. */
  waiting: number;
  depth: Record<string, number>;
  running: {
    job_class: string;
    mine: boolean;
    job_id: number | null;
    eta_s: number | null;
  } | null;
  /** My active jobs: position (0 = running, 1 = next) and ETA. */
  jobs: Record<string, { position: number; eta_s: number | null }>;
  jobs_omitted: number;
}

export interface ITargetsReply {
  targets: ITarget[];
  default: string | null;
  problems: string[];
  sources: string[];
}

export interface IJob {
  target: string;
  id: number;
  name: string | null;
  status: string;
  job_class: string;
  format: string;
  shots: number;
  shots_done: number;
  position: number | null;
  eta_s: number | null;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
}

export interface IJobsReply {
  jobs: IJob[];
  errors: Record<string, string>;
}

/** One server-sent event: its name, its JSON data and its id (when it has one). */
export interface IEvent {
  kind: string;
  data: any;
  id: string | null;
}

const settings = ServerConnection.makeSettings();

function url(path: string): string {
  return URLExt.join(settings.baseUrl, 'qhpc', 'api', path);
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url(path), init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) {
    throw new Error(data.message || `${response.status} ${response.statusText}`);
  }
  return data as T;
}

export const getTargets = (): Promise<ITargetsReply> => request('targets');

export const getJobs = (): Promise<IJobsReply> => request('jobs');

export const cancelJob = (job: IJob): Promise<IJob> =>
  request(`jobs/${job.id}/cancel?target=${encodeURIComponent(job.target)}`, {
    method: 'POST'
  });

/**
 * Follow the event stream until `signal` aborts or the server ends it.
 * `onOpen` runs once the server has accepted the stream.
 */
export async function followEvents(
  onOpen: () => void,
  onEvent: (event: IEvent) => void,
  signal: AbortSignal
): Promise<void> {
  const response = await ServerConnection.makeRequest(
    url('events'),
    { signal, headers: { Accept: 'text/event-stream' } },
    settings
  );
  if (!response.ok || !response.body) {
    throw new Error(`event stream refused: ${response.status} ${response.statusText}`);
  }
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseBlock(block);
      if (event) {
        onEvent(event);
      }
    }
  }
}

/**
 * One event block of the stream (the one parser of this extension): `event:`, `id:` and
 * `data:` fields, data lines joined by newlines; comment lines (`: heartbeat`) and blocks
 * without data are skipped.
 */
export function parseBlock(block: string): IEvent | null {
  let kind = 'message';
  let id: string | null = null;
  const data: string[] = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (line.startsWith(':')) {
      continue;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) {
      value = value.slice(1);
    }
    if (field === 'event') {
      kind = value;
    } else if (field === 'data') {
      data.push(value);
    } else if (field === 'id') {
      id = value;
    }
  }
  return data.length ? { kind, data: JSON.parse(data.join('\n')), id } : null;
}

/**
 * The server extension's REST routes and event stream (qhpc_lab/jupyter/server).
 *
 * Requests go through ServerConnection so they carry the Jupyter login and XSRF token; the
 * event stream is read with fetch rather than EventSource for the same reason.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  IBatchEntry,
  IDevice,
  IJob as IJobDocument,
  IQueueEvent,
  IQuota,
  IReservation
} from './generated.js';

export type { IBatchEntry, IQuota, IReservation };
/** A scheduler's queue as its `queue` event tells this user (other users' jobs: counts only). */
export type IQueue = IQueueEvent;

/**
 * A target as the server extension describes it; times are seconds at `received`. Past its
 * own fields, what `GET /device` says (the relayed fields of the daemon's device document),
 * once the scheduler answered.
 */
export interface ITarget
  extends Partial<Omit<IDevice, 'state' | 'message' | 'calibration_age_s'>> {
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
  /** The device's state (a DeviceState from a scheduler; a QRMI resource's own word). */
  state: string | null;
  message: string;
  /** While the scheduler's stream is down: seconds until the next try, at `received`. */
  retry_in_s?: number | null;
  calibration_age_s: number | null;
  /** The scheduler's latest `queue` event, once its stream is followed. */
  queue?: IQueue;
  /** The quotas charging my jobs (`GET /quotas`), as of the last probe. */
  quotas?: IQuota[];
}

export interface ITargetsReply {
  targets: ITarget[];
  default: string | null;
  problems: string[];
  sources: string[];
}

/** One of my jobs on a scheduler target: the relayed fields of the daemon's job document. */
export interface IJob extends IJobDocument {
  target: string;
}

export interface IJobsReply {
  jobs: IJob[];
  errors: Record<string, string>;
}

export interface IBatchReply {
  entries: IBatchEntry[];
}

/** The "Run as batch job" dialog's answer: the notebook is relative to the Jupyter root. */
export interface IRunForm {
  path: string;
  /** QPU slots, or per QPU resource (several QPUs). */
  qpus: number | Record<string, number>;
  time_limit: string | null;
  job_class: string;
  parameters: Record<string, unknown>;
}

/** The names and defaults of a notebook's cell tagged `parameters`. */
export interface IParametersReply {
  path: string;
  parameters: Record<string, unknown>;
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

export const getBatch = (): Promise<IBatchReply> => request('batch');

export const getParameters = (path: string): Promise<IParametersReply> =>
  request(`batch/parameters?path=${encodeURIComponent(path)}`);

export const submitRun = (form: IRunForm): Promise<IBatchEntry> =>
  request('batch', { method: 'POST', body: JSON.stringify(form) });

export const cancelRun = (entry: IBatchEntry): Promise<IBatchEntry> =>
  request(`batch/${encodeURIComponent(entry.id)}/cancel`, { method: 'POST' });

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

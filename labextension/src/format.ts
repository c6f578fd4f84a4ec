/**
 * How times and places in the queue read in the sidebar and the status bar: the kernel's own
 * wording (qhpc_lab/vocabulary.py `format_duration`, `format_position`, `format_sets_done`,
 * `start_in_s`, and `expected_times` of the client's Job), which
 * tests/test_labextension_sync.py runs this against. This module imports only the generated facts, so Node can run it alone.
 */
import { HOURS_FROM_S, MINUTES_FROM_S } from './generated.js';

/** 42 s, 3 min, 2.5 h: as precise as a glance needs; negative durations read 0 s. */
export function duration(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < MINUTES_FROM_S) {
    return `${Math.floor(s + 0.5)} s`;
  }
  if (s < HOURS_FROM_S) {
    return `${Math.floor(s / 60 + 0.5)} min`;
  }
  const tenths = Math.floor(s / 360 + 0.5);
  return `${Math.floor(tenths / 10)}.${tenths % 10} h`;
}

/** A browser time as the clock on the wall reads it (HH:MM:SS), for "as of" marks. */
export function clockTime(time: number): string {
  const d = new Date(time);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** 1st, 2nd, 3rd, 4th, 11th, 22nd. */
export function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/**
 * Where a job stands, one wording everywhere: `running` (position 0), `2nd of 3 waiting`, or
 * `2nd waiting` where the number of waiting jobs is unknown (or out of date: below the place).
 */
export function position(place: number, waiting?: number | null): string {
  if (place === 0) {
    return 'running';
  }
  if (waiting === null || waiting === undefined || waiting < place) {
    return `${ordinal(place)} waiting`;
  }
  return `${ordinal(place)} of ${waiting} waiting`;
}

/** A count as people read it: thousands grouped by a space (`1 000`, `12 345`). */
export function count(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
}

/** A sweep's progress, one wording everywhere: `sets 120 of 1 000 done`. */
export function setsDone(done: number, total: number): string {
  return `sets ${count(done)} of ${count(total)} done`;
}

/**
 * `starts in ~40 s`, `ends in ~2 min`: an active job's two estimates, `elapsedS` seconds after
 * they were told. The start is the end less its shots left on the device (0 once started);
 * unknown without the device's time per shot.
 */
export function expectedTimes(
  job: {
    status: string;
    position: number | null;
    eta_s: number | null;
    shots: number;
    shots_done: number;
  },
  timePerShotS: number | null | undefined,
  elapsedS = 0
): string[] {
  if (job.status !== 'PENDING' && job.status !== 'RUNNING') {
    return [];
  }
  const parts: string[] = [];
  const started = job.status === 'RUNNING' || job.position === 0;
  if (!started && job.eta_s !== null && timePerShotS !== null && timePerShotS !== undefined) {
    const start = Math.max(0, job.eta_s - (job.shots - job.shots_done) * timePerShotS);
    parts.push(`starts in ~${duration(start - elapsedS)}`);
  }
  if (job.eta_s !== null) {
    parts.push(`ends in ~${duration(job.eta_s - elapsedS)}`);
  }
  return parts;
}

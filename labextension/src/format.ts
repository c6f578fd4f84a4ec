/**
 * How times read in the sidebar and the status bar: the kernel's own wording
 * (qhpc_lab/vocabulary.py `format_duration`), which tests/test_labextension_sync.py runs this
 * against. This module imports only the generated facts, so Node can run it alone.
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

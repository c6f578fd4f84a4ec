import { LabIcon } from '@jupyterlab/ui-components';

/** A neutral atom: a nucleus and two orbits, in the theme's icon colour. */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="none" stroke="#616161" stroke-width="1.6">
    <ellipse cx="12" cy="12" rx="10" ry="4" transform="rotate(30 12 12)"/>
    <ellipse cx="12" cy="12" rx="10" ry="4" transform="rotate(-30 12 12)"/>
  </g>
  <circle class="jp-icon3" cx="12" cy="12" r="2.2" fill="#616161"/>
</svg>`;

export const qpuIcon = new LabIcon({ name: 'qhpc-lab:qpu', svgstr: svg });

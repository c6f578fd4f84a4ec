/**
 * The status-bar item: the active target's state and where my next job stands.
 */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IJob } from './api';
import { QpuModel } from './model';
import { position } from './format.js';
import { StateBadge } from './sidebar';

/** Where my next job stands, in a few words. */
function describe(job: IJob | null, waiting?: number | null): string {
  if (!job) {
    return 'no job queued';
  }
  if (job.status === 'RUNNING') {
    return `job #${job.id} ${position(0)}`;
  }
  return job.position === null
    ? `job #${job.id} queued`
    : `job #${job.id} ${position(job.position, waiting)}`;
}

function Status(props: { model: QpuModel }): JSX.Element {
  const { model } = props;
  if (model.phase !== 'ready') {
    return <span>QPU {model.phase === 'loading' ? '…' : 'unavailable'}</span>;
  }
  const target = model.activeTarget?.value;
  if (!target) {
    return <span title="No QPU found: programs run on the local emulator">QPU: emulator</span>;
  }
  return (
    <span title={`${target.name}: ${target.device ?? target.type}`}>
      {target.name} <StateBadge state={target.state} /> · {describe(model.nextJob, model.queues[model.nextJob?.target ?? '']?.waiting)}
    </span>
  );
}

export class QpuStatus extends ReactWidget {
  constructor(
    private readonly _model: QpuModel,
    onClick: () => void
  ) {
    super();
    this.addClass('qhpc-status-item');
    this.node.title = 'QPU: open the sidebar';
    this.node.addEventListener('click', onClick);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this._model.changed}>
        {() => <Status model={this._model} />}
      </UseSignal>
    );
  }
}

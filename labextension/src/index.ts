/**
 * qhpc-lab for JupyterLab: the "QPU" sidebar and status-bar item.
 *
 * Both read one model fed by the qhpc_lab server extension's REST routes and event stream,
 * which find this session's QPUs the way a kernel does.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { IStatusBar } from '@jupyterlab/statusbar';

import { QpuModel } from './model';
import { QpuSidebar } from './sidebar';
import { QpuStatus } from './statusbar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'qhpc-lab-labextension:plugin',
  description: 'QPU sidebar and status bar: device state, calibration, queue and my jobs.',
  autoStart: true,
  requires: [ILabShell],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, shell: ILabShell, statusBar: IStatusBar | null) => {
    const model = new QpuModel();
    const sidebar = new QpuSidebar(model);
    shell.add(sidebar, 'left', { rank: 600 });
    if (statusBar) {
      statusBar.registerStatusItem('qhpc-lab-labextension:status', {
        item: new QpuStatus(model, () => shell.activateById(sidebar.id)),
        align: 'left',
        rank: 10
      });
    }
    model.start();
  }
};

export default plugin;

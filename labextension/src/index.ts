/**
 * qhpc-lab for JupyterLab: the "QPU" sidebar and status-bar item, and "Run as batch job".
 *
 * Both read one model fed by the qhpc_lab server extension's REST routes and event stream,
 * which find this session's QPUs the way a kernel does and the user's batch runs in their
 * batch ledger.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  Notification,
  ToolbarButton,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import type { DocumentRegistry, IDocumentWidget } from '@jupyterlab/docregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import { IBatchEntry, IRunForm, getParameters } from './api';
import { RunDialogBody, batchWord } from './batch';
import { QpuModel } from './model';
import { QpuSidebar } from './sidebar';
import { QpuStatus } from './statusbar';

const RUN_COMMAND = 'qhpc:run-as-batch-job';

/** The notebook a widget shows, if it is one. */
function notebookOf(widget: Widget | null): IDocumentWidget | null {
  const context = (widget as IDocumentWidget | null)?.context;
  return context && context.path.endsWith('.ipynb') ? (widget as IDocumentWidget) : null;
}

/** The job classes the QPU knows (its queue's classes), production first. */
function jobClasses(model: QpuModel): string[] {
  const depth = model.activeTarget?.value.queue_depth ?? {};
  const known = Object.keys(depth).filter(name => name !== 'production');
  return ['production', ...known];
}

/** Save the notebook (the batch job runs the file), ask, submit; a refusal is shown. */
async function runAsBatchJob(
  model: QpuModel,
  notebook: IDocumentWidget,
  open: (path: string) => void
): Promise<void> {
  const { context } = notebook;
  if (context.model.dirty) {
    await context.save();
  }
  let parameters: Record<string, unknown>;
  try {
    parameters = (await getParameters(context.path)).parameters;
  } catch (error) {
    await showErrorMessage('Cannot run this notebook as a batch job', (error as Error).message);
    return;
  }
  const answer = await showDialog<IRunForm>({
    title: `Run ${context.path} as a batch job`,
    body: new RunDialogBody(context.path, parameters, jobClasses(model)),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Submit' })],
    focusNodeSelector: 'input'
  });
  if (!answer.button.accept || !answer.value) {
    return;
  }
  const submitted = model.submitRun(answer.value);
  const said = submitted.then(entry => `${entry.system} job ${entry.job_id}`);
  Notification.promise(said, {
    pending: { message: `Submitting ${context.path} to the batch system…`, options: {} },
    success: {
      message: (job: unknown) => `${context.path}: submitted as ${job}`,
      options: { autoClose: 5000 }
    },
    error: { message: () => `${context.path}: not submitted`, options: { autoClose: 5000 } }
  });
  try {
    await submitted;
  } catch (error) {
    await showErrorMessage('The batch run was refused', (error as Error).message);
  }
}

/** A notification when a run this page followed ends, with its executed notebook to open. */
function notifyEnded(entry: IBatchEntry, open: (path: string) => void): void {
  const word = batchWord(entry);
  const what = `${entry.kind === 'emulation' ? 'Emulation' : 'Batch run'} ${entry.title}`;
  const message = entry.failure ? `${what} failed: ${entry.failure}` : `${what}: ${word}`;
  const actions = entry.executed
    ? [{ label: 'Open', callback: () => open(entry.executed as string) }]
    : [];
  const options = { autoClose: 10000 as number | false, actions };
  if (word === 'done') {
    Notification.success(message, options);
  } else if (word === 'canceled') {
    Notification.warning(message, options);
  } else {
    Notification.error(message, options);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'qhpc-lab-labextension:plugin',
  description:
    'QPU sidebar and status bar: device state, calibration, queue, my jobs, batch runs; ' +
    'Run as batch job.',
  autoStart: true,
  requires: [ILabShell],
  optional: [IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const model = new QpuModel();
    const open = (path: string): void => {
      void app.commands.execute('docmanager:open', { path });
    };
    const sidebar = new QpuSidebar(model, open);
    shell.add(sidebar, 'left', { rank: 600 });
    if (statusBar) {
      statusBar.registerStatusItem('qhpc-lab-labextension:status', {
        item: new QpuStatus(model, () => shell.activateById(sidebar.id)),
        align: 'left',
        rank: 10
      });
    }
    app.commands.addCommand(RUN_COMMAND, {
      label: 'Run as batch job',
      caption: 'Run this notebook as a batch job holding a QPU share (production class)',
      isEnabled: () => notebookOf(shell.currentWidget) !== null,
      execute: async () => {
        const notebook = notebookOf(shell.currentWidget);
        if (notebook) {
          await runAsBatchJob(model, notebook, open);
          shell.activateById(sidebar.id);
        }
      }
    });
    palette?.addItem({ command: RUN_COMMAND, category: 'QPU' });
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (panel: IDocumentWidget, context: DocumentRegistry.Context) => {
        const button = new ToolbarButton({
          className: 'qhpc-run-batch-button',
          label: 'Run as batch job',
          tooltip: 'Run this notebook as a batch job holding a QPU share (production class)',
          onClick: () => {
            shell.activateById(panel.id);
            void app.commands.execute(RUN_COMMAND);
          }
        });
        panel.toolbar.insertItem(10, 'qhpc-run-batch', button);
        return button;
      }
    });
    model.runEnded.connect((_, entry) => notifyEnded(entry, open));
    model.start();
  }
};

export default plugin;

"""The variables a notebook run (``qhpc run``) sets for the kernel that executes the notebook.

The batch job's runner sets them; the client and the magics read them, so a notebook behaves in
a batch run as it does interactively, with the run's class and without a front end.
"""

from __future__ import annotations

JOB_CLASS = "QHPC_JOB_CLASS"
"""The class of every QPU job that names none (``%%qpu`` cells and ``qhpc_lab.submit``):
a run's ``--class``, production by default."""
BATCH_RUN = "QHPC_BATCH_RUN"
"""The run's id, set while a notebook executes as a batch job: no browser shows widgets, so
``%%qpu`` cells print their progress as text."""

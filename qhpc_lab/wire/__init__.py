"""One wire contract: what the scheduler and the kernel, the Jupyter server extension, the
sidebar and the batch system's hooks say to each other, defined once.

- :mod:`~qhpc_lab.wire.documents`: the documents the daemon serves (job, device, queue event,
  quota, session, error) as pydantic models: the daemon's response models, the client's
  reading, the server extension's relay and the sidebar's TypeScript types all derive from
  them;
- :mod:`~qhpc_lab.wire.times`: the one UTC time formatter;
- :mod:`~qhpc_lab.wire.qrmi`: the QRMI job variables the hooks write and discovery reads;
- :mod:`~qhpc_lab.wire.batchrun`: the variables a notebook run sets for its kernel (the run's
  class, no front end), which the client and the magics read.

The words these carry (job statuses, device states, holds, quota kinds and units) are
:mod:`qhpc_lab.vocabulary`, the one layer below. ``python -m qhpc_lab.wire`` writes
``labextension/src/generated.ts`` (tests/test_labextension_sync.py checks it).

Import the submodule you need: this package imports nothing itself, so the batch system's
hooks read the QRMI names without loading pydantic.
"""

"""Jupyter integration: the ``%qpu`` magics (:mod:`~qhpc_lab.jupyter.magics`) in the kernel,
the server extension (:mod:`~qhpc_lab.jupyter.server`) in the notebook server."""

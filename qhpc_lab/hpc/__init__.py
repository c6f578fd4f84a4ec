"""HPC integration: Slurm hooks that hand a job its QPU share, and a single-node dev cluster.

``slurm``: the Prolog / Epilog / TaskProlog hooks (``qhpc slurm ...``) that open a session on
the second-level scheduler for a job holding a ``qpu`` licence or GRES, export the QRMI
variables of DESIGN §3.1 into its tasks, and revoke the session when the job ends.
``devcluster``: ``qhpc dev-cluster start|stop|status`` — munged, slurmctld, slurmd and a
scheduler on this machine, with those hooks configured (tests and developers).
"""

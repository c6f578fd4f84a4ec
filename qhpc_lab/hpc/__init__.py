"""HPC integration: first-level scheduler hooks that hand a job its QPU share, and dev clusters.

``hooks``: the scheduler-neutral allocation layer (open a session for a job's QPU slots, the
job's QRMI variables, revoke at job end, never fail a job). ``slurm``: its Slurm side, the
Prolog / Epilog / TaskProlog (``qhpc slurm ...``) for a job holding a ``qpu`` licence or GRES.
``gridengine``: its Grid Engine side, the queue prolog and epilog and a load sensor
(``qhpc gridengine ...``) for a job requesting the ``qpu`` consumable.
``devcluster``: ``qhpc dev-cluster start|stop|status [--scheduler slurm|gridengine]`` —
munged, a scheduler and a single-node Slurm or Grid Engine on this machine, with those hooks
configured (tests and developers).
"""

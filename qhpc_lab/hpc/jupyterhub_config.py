"""Example JupyterHub config for a login node: each user's JupyterLab runs in a Slurm (or Grid
Engine) job that holds a share of the QPU.

Copy to ``/etc/jupyterhub/jupyterhub_config.py`` and adapt the values marked SITE. How it works:
batchspawner's ``SlurmSpawner`` submits a job asking for the ``qpu`` licence; our Slurm Prolog
opens a scheduler session for it, and the TaskProlog hands the Lab (started with ``srun``) the
QRMI variables, so the Lab's "Python 3 (QPU)" kernels and its QPU sidebar find the share. When
the server stops, the job ends and the Epilog revokes the session. With
``QHPC_SCHEDULER=gridengine``, batchspawner's ``GridengineSpawner`` submits with ``qsub -l qpu=1``
instead and our queue prolog puts the QRMI variables into the Lab's environment
(docs/hpc-deployment.md §7); tests/test_gridengine.py runs that for real.

Needs (docs/hpc-deployment.md §5): ``sudo`` for the hub (batchspawner runs
``sudo -E -u USER sbatch``), real user accounts, qhpc-lab with the ``hub`` extra in a venv every
user can execute, ``configurable-http-proxy`` (npm), and the users in ``QHPC_ALLOWED_GROUPS``.
tests/test_jupyterhub.py runs this file for real (through ``load_subconfig``) with a dev cluster
and a throwaway user who logs in through PAM as a member of ``qhpc-users``.
"""

import os

c = get_config()  # noqa: F821 -- defined by JupyterHub when it loads this file

# SITE: the venv with qhpc-lab[hub] (jupyterhub, batchspawner, jupyterlab, our extension and
# kernelspec), on a file system every compute node mounts and every user can execute.
QHPC_VENV = os.environ.get("QHPC_VENV", "/opt/qhpc/venv")
# SITE: the QPU share per Lab: `-L qpu:1` (a licence) or `--gres=qpu:1` (a GRES). One slot of
# `qpu:N` does not block the QPU while its user thinks: the second-level scheduler interleaves
# everyone's shots.
QPU_REQUEST = os.environ.get("QHPC_QPU_REQUEST", "-L qpu:1")
# SITE: the first-level scheduler: slurm, or gridengine (Grid Engine / Open Cluster Scheduler)
QHPC_SCHEDULER = os.environ.get("QHPC_SCHEDULER", "slurm")
# SITE: who may log in: the members of these Unix groups (comma-separated). JupyterHub lets
# nobody in until told so, and its login page then says only "Invalid username or password"
# (the "not allowed" is in the hub's log). `groupadd qhpc-users; usermod -aG qhpc-users alice`.
QHPC_ALLOWED_GROUPS = os.environ.get("QHPC_ALLOWED_GROUPS", "qhpc-users")

# -- the hub --------------------------------------------------------------------------------
c.JupyterHub.bind_url = "http://:8000"  # SITE: put TLS in front (or set ssl_cert/ssl_key)
# The Labs run on compute nodes and call the hub's API: listen where they can reach it.
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = "http://login01:8081"  # SITE: the login node, as nodes see it
# SITE: the site's authenticator (PAM is JupyterHub's default, LDAP or OAuth via
# oauthenticator). Spawned jobs run as the Unix user of the same name.
c.JupyterHub.authenticator_class = "pam"
# Group membership is checked by PAM and every LocalAuthenticator; with another authenticator
# use its own setting (allowed_users, an OAuth organisation, allow_all).
c.LocalAuthenticator.allowed_groups = {g.strip() for g in QHPC_ALLOWED_GROUPS.split(",") if g}
c.JupyterHub.cleanup_servers = False  # a hub restart must not cancel everyone's Slurm jobs

# -- the Lab, as a Slurm job ----------------------------------------------------------------
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.req_options = QPU_REQUEST
c.SlurmSpawner.req_runtime = "8:00:00"  # SITE: also the QPU session's timeout (QRMI variable)
c.SlurmSpawner.req_partition = ""  # SITE: an interactive partition, if the site has one
c.SlurmSpawner.req_memory = ""  # SITE: e.g. "8G"
c.SlurmSpawner.req_nprocs = "2"
# The Lab runs as a job step: the TaskProlog exports the QRMI variables into its environment.
c.SlurmSpawner.req_srun = "srun"
# Absolute paths: sudo's secure_path replaces PATH, and sbatch exports that PATH to the job.
c.SlurmSpawner.batchspawner_singleuser_cmd = f"{QHPC_VENV}/bin/batchspawner-singleuser"
c.SlurmSpawner.cmd = [f"{QHPC_VENV}/bin/jupyterhub-singleuser"]
# The Lab runs on a compute node and the hub's proxy connects to it there, by the node's name
# as Slurm or Grid Engine reports it (so compute-node names must resolve on the hub): listen on
# the node's addresses, not only its loopback. SITE: one interface's address instead, if any.
c.Spawner.ip = "0.0.0.0"
c.Spawner.default_url = "/lab"
# New notebooks get the "Python 3 (QPU)" kernel (%qpu magics loaded); others stay available.
c.Spawner.args = ["--MappingKernelManager.default_kernel_name=python3-qpu"]

# -- timeouts -------------------------------------------------------------------------------
# A job can wait in the queue (for a node, or for the licence when every slot is held): give up
# after 5 minutes rather than leave the user on a spinner forever.
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120  # from the job running to the Lab answering
c.SlurmSpawner.startup_poll_interval = 0.5
c.Spawner.poll_interval = 30  # notice a job that ended (scancel, time limit) within 30 s
# Idle Labs hold a QPU share and a node: cull them with jupyterhub-idle-culler (a hub service),
# e.g. `python3 -m jupyterhub_idle_culler --timeout=3600`.

# -- or the Lab as a Grid Engine job ----------------------------------------------------------
if QHPC_SCHEDULER == "gridengine":
    c.JupyterHub.spawner_class = "batchspawner.GridengineSpawner"
    # the qpu consumable (one slot); h_rt, also the QPU session's timeout; bash, which the
    # spawner's script needs where the queue's shell_start_mode is posix_compliant
    c.GridengineSpawner.req_options = os.environ.get(
        "QHPC_QPU_REQUEST", "-l qpu=1,h_rt=8:00:00 -S /bin/bash"
    )
    c.GridengineSpawner.batchspawner_singleuser_cmd = f"{QHPC_VENV}/bin/batchspawner-singleuser"
    c.GridengineSpawner.cmd = [f"{QHPC_VENV}/bin/jupyterhub-singleuser"]
    c.GridengineSpawner.startup_poll_interval = 0.5

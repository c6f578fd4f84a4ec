#!/usr/bin/env bash
# Install the Debian packages the real-service tests need; fail loudly if one cannot be had.
set -euo pipefail
need=()
command -v munged >/dev/null || need+=(munge libmunge2)
[ -e /usr/lib/x86_64-linux-gnu/libmunge.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libmunge.so.2 ] || need+=(libmunge2)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Slurm 22.05 for tests/test_slurm.py (the dev cluster: slurmctld + slurmd on this machine)
[ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm slurmctld)
[ -x /usr/sbin/slurmd ] || need+=(slurmd)
{ [ -x /usr/bin/sbatch ] && [ -x /usr/bin/scontrol ]; } || need+=(slurm-client)
# Grid Engine 8.1.9 for tests/test_gridengine.py (its dev cluster: sge_qmaster + sge_execd with
# a private SGE_ROOT; the packages must not set up a cluster of their own, see debconf below)
[ -x /usr/sbin/sge_qmaster ] || need+=(gridengine-master)
[ -x /usr/sbin/sge_execd ] || need+=(gridengine-exec)
{ [ -x /usr/lib/gridengine/qsub ] && [ -x /usr/lib/gridengine/qconf ]; } || need+=(gridengine-client)
# sudo for tests/test_jupyterhub.py: batchspawner submits with `sudo -E -u USER sbatch`
command -v sudo >/dev/null || need+=(sudo)
# Chromium and its fonts for the browser tests (tests/test_ui.py; never a Playwright download)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -d /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
# Prometheus and promtool for tests/test_prometheus.py (the test starts its own on 127.0.0.1)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || need+=(prometheus)
# HAProxy for tests/test_ha.py (in front of the scheduler replicas, deploy/haproxy/qhpc.cfg)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  echo "system-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Grid Engine asks whether to configure a cluster: no (the dev cluster makes its own)
  debconf-set-selections <<'EOF' || { echo "system-deps: debconf-set-selections failed" >&2; exit 1; }
gridengine-common shared/gridengineconfig boolean false
gridengine-master shared/gridengineconfig boolean false
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
EOF
  apt-get update -qq || { echo "system-deps: apt-get update failed" >&2; exit 1; }
  apt-get install -y -qq "${need[@]}" >/dev/null || { echo "system-deps: apt-get install ${need[*]} failed" >&2; exit 1; }
fi

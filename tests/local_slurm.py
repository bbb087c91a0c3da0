"""A single-node SLURM on localhost, from Debian's slurm-wlm and munge, for testing the SLURM profile.

Runs as root: starts its own munged (own key and socket), slurmctld and slurmd (no slurmdbd, no
cgroups: proctrack/linuxproc, task/none) on ports 16817/16818, and stops only those processes.
The config goes to /etc/slurm/slurm.conf, SLURM's default path, because the slurm-jobstep executor
plugin strips SLURM_CONF from the environment of the job steps it starts; it refuses to run if a
config is already there, and removes only the file it wrote.

As a script: ``python tests/local_slurm.py`` starts the cluster, prints what to export, and stops it
on Ctrl-C.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
PARTITION = "plotlib"
#: MinJobAge must be >= 3 x the profile's slurm-init-seconds-before-status-checks (20 s), or the
#: executor plugin falls back to sacct, which fails without slurmdbd.
MIN_JOB_AGE = 90


def unavailable_reason() -> str | None:
    """Why this machine cannot host the test cluster, or None."""
    if os.geteuid() != 0:
        return "a localhost SLURM needs root (it runs slurmd and writes /etc/slurm/slurm.conf)"
    if DEFAULT_CONF.exists():
        return f"{DEFAULT_CONF} already exists; not touching an existing SLURM installation"
    return None


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop` (also on failure)."""

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.dir = Path(workdir)
        self.procs: list[subprocess.Popen] = []
        self.wrote_conf = False
        self.host = socket.gethostname().split(".")[0]

    @property
    def env(self) -> dict[str, str]:
        """What a client (and the SLURM profile) needs in its environment."""
        return {"PLOTLIB_SLURM_PARTITION": PARTITION, "PLOTLIB_SLURM_ACCOUNT": ""}

    def _conf(self) -> str:
        mem = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20) - 1024
        d = self.dir
        return "\n".join([
            "ClusterName=plotlibtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={d}/munge.sock", "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            f"MinJobAge={MIN_JOB_AGE}", "ReturnToService=2", "MpiDefault=none",
            "SlurmctldPort=16817", "SlurmdPort=16818",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN",
            # not the default partition: a job that reaches SLURM without the profile's partition fails
            f"PartitionName={PARTITION} Nodes={self.host} Default=NO MaxTime=INFINITE State=UP",
            "",
        ])

    def _spawn(self, *cmd: str) -> None:
        log = open(self.dir / f"{Path(cmd[0]).name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout: float = 60) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.write_text(self._conf())
        self.wrote_conf = True
        d = self.dir
        self._spawn("munged", "--foreground", "--force", f"--socket={d}/munge.sock", f"--key-file={key}",
                    f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munge.seed")
        self._wait(lambda: (d / "munge.sock").exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-i")
        self._wait(lambda: subprocess.run(["sinfo"], capture_output=True).returncode == 0, timeout, "slurmctld")
        self._spawn("slurmd", "-D", "-N", self.host)
        self._wait(self._node_idle, timeout, "slurmd (node idle)")

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.split()
        return "idle" in out

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0].args[0]} exited with {dead[0].returncode}; see {self.dir}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout} s; logs in {self.dir}")

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this object started (newest first), remove its config."""
        if shutil.which("scancel") and self.procs:
            subprocess.run(["scancel", "--partition", PARTITION], capture_output=True, timeout=30)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if self.wrote_conf:
            DEFAULT_CONF.unlink(missing_ok=True)
            self.wrote_conf = False

    def log(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""


if __name__ == "__main__":
    cluster = LocalSlurm(tempfile.mkdtemp(prefix="plotlib-slurm-"))
    try:
        cluster.start()
        print("SLURM is up. In another shell:")
        print("  " + " ".join(f"export {k}={v!r}" for k, v in cluster.env.items()))
        print("  snakemake --profile profiles/slurm --workflow-profile none --config scale=tiny")
        print("Ctrl-C stops it.")
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()

# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Stopping on a signal as the launchers deliver it (ddpm_hf/trainer/interrupts.py), with real `accelerate launch`
processes: one, and two over gloo.

A signal to the job's process group (SLURM's `scancel`, systemd's control-group kill, `kill -- -PGID`, Ctrl-C)
reaches the trainer twice: from the group and forwarded by the launcher. On one process `accelerate launch` shares
the trainer's process group and forwards SIGTERM (also for a SIGINT); on several, torchrun starts every rank in a
session of its own, so the group signal reaches the launcher alone and the ranks get its copy, plus their own where
the whole control group is signalled (SLURM, systemd). All of these are one request: finish the step, checkpoint, and
stop (the launcher then exits 128 + the signal's number, its own convention). Only a second request, sent after the
trainer has said it is stopping and `SAME_REQUEST_WINDOW_S` later, stops at once.

Every run trains slowly (a test delay after each step) on far more steps than it can reach, and is signalled once a
scheduled checkpoint shows that the loop is running: the stop may land at any instant of a step or of a save.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from support.training import REPO, TINY, TRAIN_SCRIPT, launch_command, run_env

from ddpm_hf.trainer.interrupts import SAME_REQUEST_WINDOW_S

SLOW = [*TINY, "--report_to", "none", "--validation_steps", "0", "--max_train_steps", "1000",
        "--checkpointing_steps", "2"]
STEP_DELAY = {"DDPM_HF_TEST_STEP_DELAY": "0.2"}


class Run:
    """A training process in a session of its own (a group signal reaches it alone), its stderr read as it comes."""

    def __init__(self, command: list, env: dict):
        self.process = subprocess.Popen(command, env=run_env(**env), cwd=REPO, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_until(self, condition, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                self._reader.join(timeout=10)
                pytest.fail(f"the run ended too early ({self.process.returncode}):\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the awaited moment never came:\n{self.stderr[-3000:]}")
            time.sleep(0.02)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def finish(self, timeout: float = 120) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the run did not stop:\n{self.stderr[-3000:]}")
        self._reader.join(timeout=10)
        return self.process.returncode

    def kill(self) -> None:
        for process in [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]:
            process.kill()
        self.process.wait()

    def ranks(self) -> list:
        """The training processes under the launcher (torchrun's ranks; on one process, the launcher's child)."""
        return [child for child in psutil.Process(self.process.pid).children(recursive=True)
                if str(TRAIN_SCRIPT) in child.cmdline()]


def checkpoint_written(output_dir, step: int):
    return lambda: (output_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()


def assert_stopped_with_a_checkpoint(run: Run, output_dir, signal_name: str) -> int:
    """One stop, after a step that was kept: the trainer's line, `latest` naming that step's checkpoint, no pipeline."""
    stderr = run.stderr
    assert "stopped at once" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    step = int(line.split("at step ")[1].split(";")[0])
    assert line == f"interrupted by {signal_name} at step {step}; resume with --resume_from_checkpoint latest"
    checkpoints = output_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"checkpoint-{step}"
    assert json.loads((checkpoints / f"checkpoint-{step}" / "trainer_state.json").read_text())["global_step"] == step
    assert step > 2 and not (output_dir / "model_index.json").exists()
    return step


# ----------------------------------------------------------------------------------------------------------------
# One process: the group's signal and the launcher's copy
# ----------------------------------------------------------------------------------------------------------------
def test_one_process_under_accelerate_launch_stops_once_with_a_checkpoint_on_a_group_signal(tmp_path):
    """scancel, preemption, `kill -- -PGID`: the trainer gets the group's SIGTERM, then the launcher's. (A signal to
    the launcher alone reaches the trainer once, as the launcher's copy does here; Ctrl-C, SIGINT then the launcher's
    SIGTERM, is the last test's first two signals.)"""
    output_dir = tmp_path / "out"
    run = Run(launch_command(*SLOW, "--output_dir", output_dir), env=STEP_DELAY)
    run.wait_until(checkpoint_written(output_dir, 2))
    os.killpg(run.process.pid, signal.SIGTERM)  # the launcher and the trainer: one process group
    code = run.finish()

    # One request. (The trainer's "received" line is not asserted: the launcher relays the trainer's stderr, and
    # its own signal handler can drop the chunk it is copying.)
    assert_stopped_with_a_checkpoint(run, output_dir, "SIGTERM")
    assert code == 128 + signal.SIGTERM  # the launcher's exit code: it was signalled too


# ----------------------------------------------------------------------------------------------------------------
# Two processes: torchrun forwards to every rank, and the control group signals them too
# ----------------------------------------------------------------------------------------------------------------
def test_two_processes_signalled_directly_and_by_torchrun_stop_after_the_same_step_with_a_checkpoint(tmp_path):
    output_dir = tmp_path / "out"
    run = Run(launch_command(*SLOW, "--output_dir", output_dir, num_processes=2), env=STEP_DELAY)
    run.wait_until(checkpoint_written(output_dir, 2))
    ranks = run.ranks()
    assert len(ranks) == 2
    # What SLURM or systemd do: every process of the job gets SIGTERM. The ranks first, then the launcher (here its
    # process group, which holds the launcher alone), which forwards SIGTERM to every rank: each rank gets two.
    for rank in ranks:
        rank.send_signal(signal.SIGTERM)
    os.killpg(run.process.pid, signal.SIGTERM)
    code = run.finish()

    assert run.said("closing signal SIGTERM"), run.stderr[-3000:]  # torchrun did forward it
    for index in range(2):  # each rank took one request, though two signals reached it
        acknowledged = [line for line in run.lines if f"[rank {index}] SIGTERM received" in line]
        assert len(acknowledged) == 1, run.stderr[-3000:]
    step = assert_stopped_with_a_checkpoint(run, output_dir, "SIGTERM")
    assert not (output_dir / "checkpoints" / f"checkpoint-{step + 1}").exists()
    assert code == 128 + signal.SIGTERM


# ----------------------------------------------------------------------------------------------------------------
# A deliberate second request
# ----------------------------------------------------------------------------------------------------------------
def test_a_copy_within_the_window_is_the_same_request_and_a_signal_after_it_stops_at_once(tmp_path):
    """Run as `python training/train.py`, where the exit code is the trainer's (and no launcher SIGKILLs it 5 s after
    its own SIGTERM). The signals are Ctrl-C's under `accelerate launch`: SIGINT, then the launcher's SIGTERM."""
    output_dir = tmp_path / "out"
    checkpoints = output_dir / "checkpoints"
    # The save of step 4 hangs (a test hook): the first request waits for it, the second stops the run there.
    run = Run([sys.executable, str(TRAIN_SCRIPT), *map(str, SLOW), "--output_dir", str(output_dir)],
              env={**STEP_DELAY, "DDPM_HF_TEST_PAUSE_IN_SAVE": "4"})
    run.wait_until(lambda: any(checkpoints.glob(".checkpoint-4.*/PAUSED")))
    run.process.send_signal(signal.SIGINT)
    run.wait_until(lambda: run.said("SIGINT received: stopping after this step"))
    acknowledged_at = time.monotonic()  # the trainer took the signal before this
    run.process.send_signal(signal.SIGTERM)  # a copy: the run must live on through the window (wait_until checks)
    run.wait_until(lambda: time.monotonic() > acknowledged_at + SAME_REQUEST_WINDOW_S)
    run.process.send_signal(signal.SIGTERM)
    code = run.finish()

    assert code == 130, run.stderr[-3000:]
    assert "stopped at once by a second signal" in run.stderr and "Traceback" not in run.stderr
    assert len([line for line in run.lines if "received: stopping after this step" in line]) == 1
    assert (checkpoints / "latest").read_text().strip() == "checkpoint-2"
    assert not (checkpoints / "checkpoint-4").exists()

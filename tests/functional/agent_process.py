"""Run an agentkit console script as a real process, as an operator would."""

import os
import signal
import subprocess
import sys
import time

BIN_DIR = os.path.dirname(sys.executable)


class AgentProcess:
    """``agentkit-<name> --config-file <path>`` with its output in a log file."""

    def __init__(self, command: str, *args: str, log_path: str,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.log = open(log_path, 'wb')
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, command), *args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env)

    def output(self) -> str:
        with open(self.log_path, 'rb') as f:
            return f.read().decode(errors='replace')

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f'process exited ({self.proc.returncode}) '
                                     f'before logging {text!r}:\n{self.output()}')
            if time.monotonic() > deadline:
                raise AssertionError(f'{text!r} not logged in {timeout}s:\n'
                                     f'{self.output()}')
            time.sleep(0.1)

    def kill(self) -> None:
        """Cleanup: kill the agent and its privsep daemons (same session)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if not self.log.closed:
            self.log.close()

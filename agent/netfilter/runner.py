"""Running a host program with some input: the seam between netfilter logic and the host.

`ProgramRunner` is what the service network and the rule tear-down call for
`iptables-restore`, `iptables`, `iptables-save`, `ip` and `conntrack`;
`SubprocessRunner` runs the real programs (optionally in another network
namespace); `FakeRunner` records every call and answers from a script, so
that logic is unit-tested without touching the host.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Completed = subprocess.CompletedProcess[str]


class ProgramRunner(Protocol):
    def __call__(self, command: Sequence[str], input_text: str | None = None) -> Completed:
        """Run `command` to completion with `input_text` on stdin.

        A non-zero exit status is returned, not raised; a program that cannot
        be run raises OSError, one that hangs subprocess.TimeoutExpired.
        """
        ...


@dataclass(frozen=True)
class SubprocessRunner:
    # e.g. ("nsenter", "--net=/run/netns/X"): run every command in another namespace.
    prefix: tuple[str, ...] = ()
    timeout: float = 300.0

    def __call__(self, command: Sequence[str], input_text: str | None = None) -> Completed:
        return subprocess.run(
            [*self.prefix, *command],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            timeout=self.timeout,
        )


@dataclass
class _Answer:
    prefix: tuple[str, ...]
    result: Completed | OSError
    once: bool


@dataclass
class FakeRunner:
    """Records (command, input) pairs; answers with the latest scripted answer whose prefix matches.

    Unscripted commands succeed with no output.
    """

    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)
    _answers: list[_Answer] = field(default_factory=list)

    def answer(
        self, *prefix: str, returncode: int = 0, stdout: str = "", stderr: str = "", once: bool = False
    ) -> None:
        result = subprocess.CompletedProcess(list(prefix), returncode, stdout, stderr)
        self._answers.append(_Answer(prefix, result, once))

    def raise_on(self, *prefix: str, error: OSError, once: bool = False) -> None:
        self._answers.append(_Answer(prefix, error, once))

    def __call__(self, command: Sequence[str], input_text: str | None = None) -> Completed:
        command = tuple(command)
        self.calls.append((command, input_text))
        for answer in reversed(self._answers):
            if command[: len(answer.prefix)] == answer.prefix:
                if answer.once:
                    self._answers.remove(answer)
                if isinstance(answer.result, OSError):
                    raise answer.result
                return subprocess.CompletedProcess(
                    list(command), answer.result.returncode, answer.result.stdout, answer.result.stderr
                )
        return subprocess.CompletedProcess(list(command), 0, "", "")

    @property
    def commands(self) -> list[tuple[str, ...]]:
        return [command for command, _ in self.calls]

    def inputs(self, *prefix: str) -> list[str | None]:
        """What was piped into each command starting with `prefix`, in order."""
        return [text for command, text in self.calls if command[: len(prefix)] == prefix]

    def clear(self) -> None:
        self.calls.clear()

"""Bounds of `berth exec`, shared by the CLI, the control plane and the agent.

Every side checks what it receives against these (the control plane at the
operator API, again for what agents send up), so no peer can make another
hold more than a chunk at a time.
"""

from __future__ import annotations

# Arguments of one command, each at most MAX_ARG_BYTES (UTF-8), all of them at most MAX_COMMAND_BYTES.
MAX_ARGS = 256
MAX_ARG_BYTES = 4096
MAX_COMMAND_BYTES = 64 * 1024
# Bytes of stdin or output in one message.
MAX_CHUNK = 32 * 1024
# A terminal's rows or columns.
MAX_TERMINAL = 10_000
# Commands running at once through one agent.
MAX_PER_HOST = 8


def command_problem(command: list[str]) -> str:
    """Why a command cannot be run (pure), or "" when it can."""
    if not command:
        return "give a command to run (after --)"
    if len(command) > MAX_ARGS:
        return f"the command has {len(command)} arguments: at most {MAX_ARGS}"
    total = 0
    for index, argument in enumerate(command):
        size = len(argument.encode())
        if size > MAX_ARG_BYTES:
            return f"argument {index} of the command is {size} bytes long: at most {MAX_ARG_BYTES}"
        if "\x00" in argument:
            return f"argument {index} of the command holds a NUL character"
        total += size
    if total > MAX_COMMAND_BYTES:
        return f"the command is {total} bytes long: at most {MAX_COMMAND_BYTES}"
    if not command[0]:
        return "the command's program (its first argument) is empty"
    return ""


def terminal_problem(rows: int, columns: int) -> str:
    if not (0 < rows <= MAX_TERMINAL and 0 < columns <= MAX_TERMINAL):
        return f"a terminal size is 1 to {MAX_TERMINAL} rows and columns (got {rows}x{columns})"
    return ""

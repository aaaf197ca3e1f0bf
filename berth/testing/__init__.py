"""Testing helpers shipped beside the code: real daemons, the CLI in-process, waiting.

Used by tests/ and bench/; they start real processes, never fakes."""

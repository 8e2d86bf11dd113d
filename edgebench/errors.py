"""Errors that mean "the user asked for something impossible" (the CLI turns them into exit code 2),
and the exit codes, defined here only."""


class InputError(ValueError):
    """Bad input or usage, detected before anything is measured. The message is one line."""


# Exit codes of every command (DESIGN.md): 0 all good; 1 some case failed (the rest was measured
# and stored); 2 bad input or usage; 3 a regression was found by compare; 4 compare found a change
# past the threshold that it could not show to be significant or noise (inconclusive); 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_INCONCLUSIVE = 4

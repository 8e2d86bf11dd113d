"""Errors that mean "the user asked for something impossible" (the CLI turns them into exit code 2),
and the exit codes, defined here only."""


class InputError(ValueError):
    """Bad input or usage, detected before anything is measured. The message is one line."""


def did_you_mean(name: str, choices) -> str:
    """" (did you mean smollm-135m?)" when ``name`` is close to one of ``choices``, else "": the
    one place every unknown-name message gets its suggestion from."""
    import difflib

    near = difflib.get_close_matches(str(name).lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


# Exit codes of every command (DESIGN.md): 0 all good; 1 some case failed (the rest was measured
# and stored); 2 bad input or usage; 3 a regression was found by compare; 4 compare found a change
# past the threshold that it could not show to be significant or noise (inconclusive); 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_INCONCLUSIVE = 4

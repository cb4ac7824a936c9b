"""What every stage command shares: one-line errors and quiet third-party warnings."""

import functools
import sys
import warnings

import click

from trajectory_transformer.errors import PipelineError


def stage_command(function):
    """Run a stage body; a PipelineError becomes one line on stderr and exit status 1."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        warnings.filterwarnings("ignore", module="gymnasium_robotics")
        try:
            return function(*args, **kwargs)
        except PipelineError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)

    return wrapper

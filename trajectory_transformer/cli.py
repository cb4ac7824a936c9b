"""What every stage command shares: one-line errors and quiet third-party warnings."""

import functools
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import click

from trajectory_transformer.config import PARAMS_READS_VARIABLE, params_read
from trajectory_transformer.errors import PipelineError

DEBUG_VARIABLE = "TT_DEBUG"


def stage_command(function):
    """Run a stage body; a PipelineError becomes one line on stderr and exit status 1, and so
    does any other exception (its traceback too when TT_DEBUG=1). Stages write atomically, so a
    failed stage leaves nothing behind."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        warnings.filterwarnings("ignore", module="gymnasium_robotics")
        try:
            function(*args, **kwargs)
            record_params_read()
            return
        except PipelineError as error:
            click.echo(f"error: {error}", err=True)
        except click.ClickException:  # usage errors: click prints them itself
            raise
        except Exception as error:  # noqa: BLE001 (the last resort: a user sees one line, not a traceback)
            if os.environ.get(DEBUG_VARIABLE) == "1":
                traceback.print_exc()
            stage = Path(sys.argv[0]).stem
            message = str(error).splitlines()[0] if str(error) else ""
            click.echo(f"error: stage {stage} failed unexpectedly: {type(error).__name__}: {message} "
                       f"(rerun with {DEBUG_VARIABLE}=1 for the traceback, and please report it)", err=True)
        sys.exit(1)

    return wrapper


def record_params_read() -> None:
    """Append {"stage": the DVC stage, "reads": params paths} to the file PARAMS_READS_VARIABLE names."""
    path = os.environ.get(PARAMS_READS_VARIABLE)
    if path:
        with open(path, "a") as log:
            log.write(json.dumps({"stage": os.environ.get("DVC_STAGE", Path(sys.argv[0]).stem), "reads": sorted(params_read)}) + "\n")

"""The stage commands DVC runs as `python -m stages.NAME` from the project root, so that they
import the library of this checkout: the code `dvc.lock` hashed, whatever else is installed."""

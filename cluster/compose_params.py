"""Write params.yaml for a suite without running anything, with DVC's own Hydra composition
(what `dvc exp run -S suite=NAME -S ...` does before it runs), for a commit to submit.

    python cluster/compose_params.py suite=paper [more overrides, e.g. train.seeds=[0,1,2]]
"""

import os
import sys

from dvc.utils.hydra import compose_and_dump

if __name__ == "__main__":
    compose_and_dump("params.yaml", os.path.abspath("conf"), None, "config", ".", sys.argv[1:])

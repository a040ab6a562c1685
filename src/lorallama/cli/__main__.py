"""``python -m lorallama.cli``: what ``lorallama train --gpus N`` starts in each worker."""

import sys

from . import main

sys.exit(main())

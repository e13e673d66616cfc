"""``python -m splitbrain_hub.serve ...`` is ``splitbrain-hub serve ...``."""
import sys

from ..cli import main

sys.exit(main(['serve', *sys.argv[1:]]))

"""Run vlmsearch from a checkout: ``python cli.py ...`` is the same as ``vlmsearch ...``.

From a checkout, indexes live in the checkout's git-ignored ``indexes/`` folder unless
``$VLMSEARCH_HOME`` says otherwise.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("VLMSEARCH_HOME", str(HERE / "indexes"))

from vlmsearch.cli import main  # noqa: E402

if __name__ == "__main__":
    main()

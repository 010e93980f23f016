"What several test modules share: where the real data is, and the marker that skips a test without it."
import os
from pathlib import Path

import pytest

MVTEC = Path(os.environ['ADTUTOR_DATA']) / 'mvtec_ad' if os.environ.get('ADTUTOR_DATA') else None   # real MVTec AD, if given
BOTTLE = MVTEC / 'bottle' if MVTEC is not None else None
needs_bottle = pytest.mark.skipif(BOTTLE is None or not BOTTLE.is_dir(),
                                  reason='real data absent: set ADTUTOR_DATA to a folder holding mvtec_ad/bottle (e.g. ../shared/data)')

"""Settings of the analysis stage (kept free of torch): both live in the plan, `study.py`."""
from ..study import ANALYSIS_BATCH_SIZE as DEFAULT_BATCH_SIZE  # noqa: F401 - the schema's default too
from ..study import ANALYSIS_VERSION as VERSION  # noqa: F401 - bump it in study.py

"""Runtime checks: health checks only a run can make (ML101-ML199), one module each."""

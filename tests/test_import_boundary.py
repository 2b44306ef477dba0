"""The library must stay importable without the pipeline extras."""

from __future__ import annotations

import subprocess
import sys


def test_import_rfdetr_does_not_import_pipeline_packages() -> None:
    code = (
        "import sys, rfdetr; print(rfdetr.RFDETRNano); "
        "extras = ('kfp', 'minio', 'kubernetes', 'prometheus_client'); "
        "bad = [m for m in extras if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RFDETRNano" in result.stdout

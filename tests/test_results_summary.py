"""The results README's summary table agrees with the committed result JSON it is generated from."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_readme_summary_matches_the_json():
    done = subprocess.run([sys.executable, "eval/results_summary.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr

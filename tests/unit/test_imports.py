import subprocess
import sys


def test_data_steps_and_pipeline_import_without_torch_or_mlflow():
    # The download and sequences images carry no torch; the pipeline compiler imports components.
    code = (
        "import sys, sasrec.cli, sasrec.data.steps, sasrec.training.step, sasrec.registry.steps\n"
        "import sasrec.evaluation.step, pipelines.sasrec_pipeline\n"
        "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

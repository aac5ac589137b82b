"""``aiforge sweep``: grid, random or TPE search (Optuna) over any training-config field.

Each trial is an ordinary ``aiforge train`` run (its own output dir and MLflow run, nested under the
sweep's), pruned when its validation metric trails the other trials at the same evaluation. The sweep
dir keeps the Optuna study, so an interrupted sweep continues with ``--resume``; at the end it holds
``summary.csv`` / ``summary.json`` and the plots in ``plots/``. ``--backend ray`` runs trials in
parallel (:mod:`aiforge.scale.sweep`).
"""

from aiforge.sweeps.run import LocalRunner, TrialRunner, run_sweep
from aiforge.sweeps.spec import SweepSpec, load_spec
from aiforge.sweeps.summary import SweepResult

__all__ = ["LocalRunner", "SweepResult", "SweepSpec", "TrialRunner", "load_spec", "run_sweep"]

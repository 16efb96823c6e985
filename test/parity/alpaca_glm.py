"""The alpaca-eval package's own win rate and length-controlled win rate on annotations opsr wrote.

Usage: alpaca_glm.py DIR  (reads DIR/annotations.json, DIR/difficulty.json; prints JSON per model)
Only alpaca_eval.metrics is loaded: the package's __init__ pulls its whole CLI (datasets, openai,
...), which the metrics never touch, so stand-ins for `datasets` and `pkg_resources` let the real
modules import, and hf_hub_download is pointed at a df_gamed.csv written here (no network)."""
import importlib.util
import json
import logging
import sys
import types
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
spec = importlib.util.find_spec("alpaca_eval")
pkg = types.ModuleType("alpaca_eval")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["alpaca_eval"] = pkg
datasets = types.ModuleType("datasets")
datasets.Dataset = type("Dataset", (), {})
sys.modules.setdefault("datasets", datasets)
sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))

import pandas as pd  # noqa: E402
import alpaca_eval.metrics.glm_winrate as glm  # noqa: E402

out_dir = Path(sys.argv[1])
data = json.loads((out_dir / "annotations.json").read_text())
difficulty = json.loads((out_dir / "difficulty.json").read_text())
# df_gamed.csv: one row per instruction index 0..n-1; only instruction_difficulty is read by the
# unregularized variants.
n = max(int(k) for k in difficulty) + 1
gamed = out_dir / "df_gamed.csv"
pd.DataFrame({
    "index": range(n), "model": "none",
    "instruction_difficulty": [difficulty.get(str(i), 0.0) for i in range(n)],
}).to_csv(gamed, index=False)
glm.hf_hub_download = lambda **kwargs: str(gamed)

result = {}
for model, anns in data.items():
    rows = [{
        "index": a["instruction"], "instruction": str(a["instruction"]),
        "output_1": "r" * a["referenceLength"], "output_2": "m" * a["modelLength"],
        # AlpacaEval's encoding: 1 = the reference (output_1) wins, 2 = the model wins.
        "preference": 1 + a["preference"], "generator_1": "reference", "generator_2": model,
        "annotator": "judge",
    } for a in anns]
    result[model] = {}
    variants = [("difficulty", "length_controlled_noreg"), ("minimal", "length_controlled_minimal")]
    for variant, name in variants:
        m = glm.get_length_controlled_winrate(pd.DataFrame(rows), glm_name=name,
                                              save_weights_dir=None)
        keys = ["win_rate", "standard_error", "length_controlled_winrate", "lc_standard_error"]
        result[model][variant] = {k: float(m[k]) / 100 for k in keys}
print(json.dumps(result))

"""The report of ``benchmarks.full_scale``: the targets checked, ``full_scale.json`` and
``full_scale.md`` written (to temporary names, then renamed).

Apart from the runner so that the stages and the presentation of their numbers stay two
concerns; nothing here measures anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from recbole_srgnn.files import atomic_outputs

CONVERT_TARGET_S = 10.0
PEAK_TARGET_MIB = 4e9 / 2**20  # 4 GB = 4·10⁹ bytes = 3,815 MiB
SSM_TARGET_RATIO = 0.25


def targets(convert_s: float, trainings: dict[str, dict]) -> list[dict]:
    """Issue 31's targets, each with the measured value and whether it was met."""
    peak = max(t["peak_rss_mib"] for t in trainings.values())
    ratio = trainings["SSM"]["epoch_s"] / trainings["CE"]["epoch_s"]
    return [
        {"target": f"conversion < {CONVERT_TARGET_S:g} s", "measured": f"{convert_s:.2f} s",
         "met": convert_s < CONVERT_TARGET_S},
        {"target": f"peak RSS while training < 4 GB ({PEAK_TARGET_MIB:,.0f} MiB)",
         "measured": f"{peak:,.0f} MiB", "met": peak < PEAK_TARGET_MIB},
        {"target": "SSM epoch <= 1/4 of a CE epoch",
         "measured": f"{trainings['SSM']['epoch_s']:,.1f} s / {trainings['CE']['epoch_s']:,.1f} s "
                     f"= {ratio:.3f}", "met": ratio <= SSM_TARGET_RATIO},
    ]


def rounded(value):
    """``value`` with every float in it rounded to 4 decimals (for the JSON file)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def header(r: dict) -> list[str]:
    """Title, command, machine and the counts of the input and the splits."""
    m, load, raw = r["machine"], r["load"], r["input"]["raw"]
    splits = ", ".join(f"{name} {s['sessions']:,} sessions / {s['cases']:,} cases / "
                       f"{s['items']:,} items" for name, s in r["conversion"]["splits"].items())
    return [
        "# Full-scale run: Retail Rocket-size log, converted, loaded, one SR-GNN epoch (CE, SSM)",
        "", f"Measured {r['when']}: `{r['command']}` ({r['seconds_total'] / 60:.1f} min in all).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, device "
        f"{m['device']}; Python {m['python']}, torch {m['torch']}; {r['threads'] or 'auto'} "
        f"torch thread(s) per process. Load average (1 min) before / after: "
        f"{r['load_average'][0]:.2f} / {r['load_average'][1]:.2f}."
        + (f" {r['note']}" if r["note"] else ""),
        "",
        f"Input: synthetic `events.csv` ({raw['rows']:,} rows, {raw['visitors']:,} visitors, "
        f"{raw['items']:,} items; {r['input']['bytes'] / 1e6:.1f} MB) from "
        f"`{r['input']['generator']}`. Converted with the default protocol: {splits}. RecBole: "
        f"{load['num_items']:,} items, {load['train_cases']:,} / {load['valid_cases']:,} / "
        f"{load['test_cases']:,} train / valid / test cases.",
        "",
    ]


def stages_table(conv: dict, load: dict) -> list[str]:
    """Conversion and RecBole load: seconds, peak RSS, load average."""
    return [
        "## Stages", "",
        "| stage (each in a fresh process) | seconds | peak RSS (MiB) | load average after |",
        "|---|---:|---:|---:|",
        f"| convert (the conversion call; CPU {conv['convert_cpu_s']:.2f} s) | "
        f"{conv['convert_s']:.2f} | {conv['peak_rss_mib']:,.0f} | "
        f"{conv['load_average_after']:.2f} |",
        f"| RecBole load (after {load['model_imports_s']:.1f} s of imports): dataset step "
        f"{load['dataset_step_s']:.1f} s (conversion reused: {load['conversion_reused']}), "
        f"Config {load['config_s']:.1f} s, create_dataset {load['create_dataset_s']:.1f} s, "
        f"data_preparation {load['data_preparation_s']:.1f} s | {load['load_s']:.1f} | "
        f"{load['peak_rss_mib']:,.0f} | {load['load_average_after']:.2f} |",
        "",
    ]


def trainings_table(trainings: dict[str, dict], model: str) -> list[str]:
    """One row per loss: epoch, evaluations, the rest, memory, loss and test metrics."""
    lines = [
        f"## One {model} epoch (defaults, batch 512, embedding 100), then validation and test",
        "",
        "| loss | epoch s | validation eval s | test eval s (full ranking) | rest of the run s "
        "| process s | peak RSS (MiB) | load average after | train loss (sum of batches) "
        "| test Hit@20 | test MRR@20 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for loss, t in trainings.items():
        name = f"SSM ({t['num_negatives']:,} negatives)" if loss == "SSM" else "CE (full softmax)"
        test = t["test_result"] or {}
        lines.append(
            f"| {name} | {t['epoch_s']:,.1f} | {t['valid_eval_s']:,.1f} | "
            f"{t['test_eval_s']:,.1f} | {t['other_s'] + t['model_build_s']:,.1f} | "
            f"{t['process_s']:,.1f} | {t['peak_rss_mib']:,.0f} | {t['load_average_after']:.2f} "
            f"| {t['train_loss']:.3f} | {test.get('hit@20', float('nan')):.4f} | "
            f"{test.get('mrr@20', float('nan')):.4f} |")
    return lines + [
        "",
        "\"rest of the run\": the dataset step, Config, RecBole load and splits, model and "
        "trainer construction inside `training.runs.run`; \"process\": the whole worker process.",
        "",
    ]


def markdown(r: dict) -> str:
    """The report: command, machine, counts, the stages' times and memory, the targets."""
    lines = (header(r) + stages_table(r["conversion"], r["load"])
             + trainings_table(r["trainings"], r["model"]))
    lines += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'met' if t['met'] else 'MISSED'} |"
              for t in r["targets"]]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, result: dict) -> None:
    """``full_scale.json`` and ``full_scale.md``, each written to a temporary name and renamed."""
    with atomic_outputs([out / "full_scale.json", out / "full_scale.md"]) as (json_tmp, md_tmp):
        json_tmp.write_text(json.dumps(rounded(result), indent=2) + "\n")
        md_tmp.write_text(markdown(result))

"""`capserve eval` on the real engines: the smoke file, layout `own`, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "tests" / "data" / "eval_smoke.jsonl"
TIMEOUT_S = 900


def in_unit_range(value: object) -> bool:
    return isinstance(value, float | int) and 0.0 <= value <= 1.0


def test_eval_reports_every_capability_of_the_file(tmp_path: Path):
    output = tmp_path / "eval.json"
    capserve = Path(sys.executable).parent / "capserve"  # the installed console script
    cmd = [str(capserve), "eval", str(SMOKE), "--layout", "own", "--output", str(output)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]

    rows = [json.loads(line) for line in SMOKE.read_text().splitlines() if line.strip()]
    labeled = Counter(name for row in rows for name in row["labels"])
    report = json.loads(output.read_text())
    assert report["layout"] == "own" and report["rows"] == len(rows)
    assert report["errors"] == []
    assert set(report["capabilities"]) == set(labeled)
    for name, result in report["capabilities"].items():
        assert result["errors"] == 0, name
        assert result["n"] == labeled[name], name
        if result["form"] == "single_label":
            assert in_unit_range(result["accuracy"]) and in_unit_range(result["macro_f1"])
            assert sum(map(sum, result["confusion"])) == result["n"]
        elif result["form"] == "multilabel":
            assert result["kind"] in ("llm_multilabel", "embedding_multilabel")
            assert in_unit_range(result["exact_match"])
            assert set(result["per_label"]) == {"toxicity", "prompt_injection"}
            for counts in result["per_label"].values():
                assert counts["f1"] is None or in_unit_range(counts["f1"])
        else:
            # Scores: an LLM 0-9 answer, or a head whose labels have values.
            assert result["form"] == "score" and result["kind"] in ("llm_score", "embedding_head")
            assert in_unit_range(result["mae"])
            assert result["spearman"] is None or -1.0 <= result["spearman"] <= 1.0
    markdown = output.with_suffix(".md").read_text()
    assert markdown.startswith("Command: `capserve eval ")
    assert "| capability | kind | n | errors | result |" in markdown
    # The report names capabilities and lines, never the texts.
    assert not any(row["text"] in markdown or row["text"] in done.stdout for row in rows)

"""Totals, ratios and Markdown tables of `capserve bench --against` and `--ablation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.phases import percentiles


def _ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x is not None and y else None


def totals(phases: Sequence[dict[str, Any]], key: str, name: str) -> dict[str, Any]:
    """One system's (or configuration's) phases pooled: texts/s over all its phases, latency
    percentiles over all its requests, summed work counters."""
    mine = [p for p in phases if p[key] == name]
    texts = sum(p["texts"] for p in mine)
    seconds = sum(p["seconds"] for p in mine)
    latencies = [value for p in mine for value in p.get("samples", ())]
    out: dict[str, Any] = {
        "phases": len(mine),
        "requests": sum(p["requests"] for p in mine),
        "texts": texts,
        "seconds": round(seconds, 3),
        "texts_per_s": round(texts / seconds, 2) if seconds else None,
        "latency_ms": percentiles(latencies),
        "failures": sum(p["failures"] for p in mine),
    }
    for counter in ("engine_prompts", "computed_prompt_tokens", "engine_prompt_tokens"):
        if all(counter in p for p in mine):
            out[counter] = sum(p[counter] for p in mine)
            # Per text: comparable between configurations that ran different numbers of phases.
            out[f"{counter}_per_text"] = round(out[counter] / texts, 2) if texts else None
    return out


def compare_systems(
    phases: Sequence[dict[str, Any]], ours: str, theirs: str, key: str = "system"
) -> dict[str, Any]:
    """Totals per system and the ratios ours/theirs (higher throughput is better; lower
    latency and computed tokens are better)."""
    a, b = totals(phases, key, ours), totals(phases, key, theirs)
    return {
        "totals": {ours: a, theirs: b},
        "ratios": {
            f"texts_per_s_{ours}_over_{theirs}": _ratio(a["texts_per_s"], b["texts_per_s"]),
            f"p50_latency_{ours}_over_{theirs}": _ratio(
                a["latency_ms"]["p50"], b["latency_ms"]["p50"]
            ),
            f"p95_latency_{ours}_over_{theirs}": _ratio(
                a["latency_ms"]["p95"], b["latency_ms"]["p95"]
            ),
            f"computed_prompt_tokens_{ours}_over_{theirs}": _ratio(
                a.get("computed_prompt_tokens"), b.get("computed_prompt_tokens")
            ),
        },
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value)


def _cores_table(result: dict[str, Any]) -> list[str]:
    """Where the cores went in each phase (CPU seconds over the phase's seconds)."""
    rows = [p for p in result["phases"] if p.get("cores_used")]
    if not rows:
        return []
    cpus = result.get("machine", {}).get("cpus")
    lines = [
        "",
        "Where the cores went during each phase (CPU seconds over the phase's seconds"
        + (f"; {cpus} cores in all" if cpus else "")
        + "): the measured system's server processes (HTTP, scheduling, engine clients), its "
        "engine processes, this load generator, and the idle system:",
        "",
        "| round | system | server processes | engine processes | load generator | idle system "
        "| sum |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in rows:
        c = p["cores_used"]
        total = round(sum(c.values()), 3)
        lines.append(
            f"| {p['round']} | {p['system']} | {c['front_end']} | {c['engines']} | {c['client']} "
            f"| {c['idle_system']} | {total} |"
        )
    return lines


def format_comparison(result: dict[str, Any]) -> str:
    lines = [
        f"Workload: {result['workload']}; {result['sizes']['requests']} requests per phase, "
        f"{result['sizes']['clients']} clients, duplicate rate {result['duplicate_rate']}.",
        "",
        "| round | system | requests | texts | s | texts/s | p50 ms | p95 ms | computed prompt "
        "tokens | engine prompts | failures | idle system's CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        lat = p["latency_ms"]
        lines.append(
            f"| {p['round']} | {p['system']} | {p['requests']} | {p['texts']} | {p['seconds']} "
            f"| {_cell(p['texts_per_s'])} | {_cell(lat['p50'])} | {_cell(lat['p95'])} "
            f"| {_cell(p['computed_prompt_tokens'])} | {_cell(p['engine_prompts'])} "
            f"| {p['failures']} | {p['idle_system_cpu_s']} |"
        )
    summary = result["summary"]
    lines += ["", "| system | texts/s | p50 ms | p95 ms | computed prompt tokens | failures |"]
    lines.append("|---|---|---|---|---|---|")
    for system, t in summary["totals"].items():
        lines.append(
            f"| {system} | {_cell(t['texts_per_s'])} | {_cell(t['latency_ms']['p50'])} "
            f"| {_cell(t['latency_ms']['p95'])} | {_cell(t.get('computed_prompt_tokens'))} "
            f"| {t['failures']} |"
        )
    lines.append("")
    lines += [f"- {key}: {_cell(value)}" for key, value in summary["ratios"].items()]
    lines += ["", "Label agreement, capserve vs vllm-serve, per capability (same texts):", ""]
    lines += ["| capability | compared | agree | rate |", "|---|---|---|---|"]
    for capability, row in result["agreement"].items():
        lines.append(
            f"| {capability} | {row['compared']:.0f} | {row['agree']:.0f} | {row['rate']} |"
        )
    limit = result.get("limit")
    if limit:
        lines += ["", f"Raw limit ({limit['engines']}):", ""]
        lines += [
            "| round | distinct texts | limit s | limit texts/s | capserve s | capserve texts/s "
            "| fraction of the limit |",
            "|---|---|---|---|---|---|---|",
        ]
        for r, row in enumerate(limit["rounds"]):
            lines.append(
                f"| {r} | {row['distinct_texts']} | {row['limit_seconds']} "
                f"| {_cell(row['limit_distinct_texts_per_s'])} | {row['capserve_seconds']} "
                f"| {_cell(row['capserve_distinct_texts_per_s'])} "
                f"| {_cell(row['fraction_of_limit'])} |"
            )
        lines += ["", f"- capserve at {_cell(limit['fraction_of_limit'])} of the raw limit"]
    idle = result.get("idle_cpu_cores")
    if idle:
        lines += [
            "",
            "CPU cores used by each started system while idle (before the measured phases): "
            + ", ".join(f"{name} {cores}" for name, cores in idle.items())
            + "; the idle system's CPU seconds during each phase are in the first table.",
        ]
    lines += _cores_table(result)
    cache = result.get("cache_replay")
    if cache:
        lat = cache["server_latency_ms"]
        lines += [
            "",
            f"Cache hits: {cache['requests']} answered requests replayed one at a time, "
            f"{cache['cached']} answered from the cache; server latency_ms p50 "
            f"{_cell(lat['p50'])}, p95 {_cell(lat['p95'])}.",
        ]
    return "\n".join(lines)


def summarise_ablation(
    phases: Sequence[dict[str, Any]], configurations: Sequence[str], baseline: str = "all_on"
) -> dict[str, Any]:
    """Totals per configuration, and each one's throughput and computed tokens relative to the
    baseline configuration (all levers on, or the default core binding)."""
    table = {name: totals(phases, "configuration", name) for name in configurations}
    base = table.get(baseline, {})
    for row in table.values():
        row["texts_per_s_vs_baseline"] = _ratio(row["texts_per_s"], base.get("texts_per_s"))
        row["computed_prompt_tokens_vs_baseline"] = _ratio(
            row.get("computed_prompt_tokens_per_text"), base.get("computed_prompt_tokens_per_text")
        )
    return table


def format_ablation(result: dict[str, Any]) -> str:
    baseline = result["schedule"][0]
    lines = [
        f"Workload: {result['workload']}; {result['sizes']['requests']} requests per phase, "
        f"{result['sizes']['clients']} clients; one server per configuration, in this order: "
        f"{', '.join(result['schedule'])}.",
        "",
        f"| configuration | what differs | texts/s | vs {baseline} | computed prompt tokens per "
        f"text | vs {baseline} | engine prompts per text | p50 ms | p95 ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["summary"].items():
        lat = row["latency_ms"]
        lines.append(
            f"| {name} | {result['descriptions'][name]} | {_cell(row['texts_per_s'])} "
            f"| {_cell(row['texts_per_s_vs_baseline'])} "
            f"| {_cell(row.get('computed_prompt_tokens_per_text'))} "
            f"| {_cell(row['computed_prompt_tokens_vs_baseline'])} "
            f"| {_cell(row.get('engine_prompts_per_text'))} | {_cell(lat['p50'])} "
            f"| {_cell(lat['p95'])} "
            f"| {row['failures']} |"
        )
    return "\n".join(lines)

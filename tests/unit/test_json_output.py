"""llm_json: reading and validating the generated object, error results, and the processor on
a fake engine with the embedded LLM's real tokenizer (prompt layout, concurrency, failures)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemAbandoned, ItemFailure, ProcessorInput, WindowContext
from processors.json_output import (
    INVALID_JSON,
    MAX_WHITESPACE,
    SCHEMA_MISMATCH,
    TRUNCATED,
    GeneratedText,
    JsonOutputProcessor,
    generated_text,
    mean_token_probability,
    read_json_output,
    structured_outputs,
)
from processors.questions.answers import encode
from processors.questions.layout import QuestionLayout, fitted_prompt
from tests.integration.session_models import prepared_model_folder
from tests.unit.fakes import SHIPPED_RUNNERS

SCHEMA = {
    "type": "object",
    "properties": {
        "tier": {"type": "string", "enum": ["small", "large"]},
        "hints": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 10}},
    },
    "required": ["tier", "hints"],
    "additionalProperties": False,
}
SECRET = "SECRET-TEXT-7f3a"


def definition(name: str = "advice", **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "kind": "llm_json",
        "model": "smollm2",
        "output_schema": SCHEMA,
        "label_field": "tier",
        "max_tokens": 40,
        "prompt": {"instructions": "Advise, as JSON.", "cue": f"Question: {name}\n"},
    }
    base.update(changes)
    return base


@pytest.fixture
def load(write_capabilities: Callable[..., Path]) -> Callable[..., CapabilityRegistry]:
    def build(*definitions: dict[str, Any]) -> CapabilityRegistry:
        return CapabilityRegistry.from_directory(write_capabilities(*definitions), SHIPPED_RUNNERS)

    return build


def validator() -> Any:
    return jsonschema.Draft202012Validator(SCHEMA)


def generated(text: str, finish: str | None = "stop", probs: Sequence[float] = ()) -> GeneratedText:
    return GeneratedText(text, finish, tuple(math.log(p) for p in probs))


# Reading the output


def test_a_valid_object_becomes_the_fields_with_its_label_and_mean_token_probability(load):
    spec = load(definition()).get("advice")
    out = read_json_output(
        spec,
        validator(),
        generated('{"tier": "large", "hints": ["be exact"]}', probs=[0.5, 1.0, 0.9]),
        {"layout": "own"},
    )
    assert out.error is None and out.answered
    assert out.fields == {"tier": "large", "hints": ["be exact"]}
    assert out.label == "large"
    assert out.confidence == pytest.approx(0.8)
    assert out.details["layout"] == "own"
    assert out.details["confidence"] == "mean_token_probability"
    assert out.details["generated_tokens"] == 3


def test_without_label_field_there_is_no_label_and_without_logprobs_confidence_is_one(load):
    spec = load(definition(label_field=None)).get("advice")
    out = read_json_output(spec, validator(), generated('{"tier": "small", "hints": []}'))
    assert out.label is None and out.fields == {"tier": "small", "hints": []}
    assert out.confidence == 1.0
    assert mean_token_probability([]) == 1.0


def test_output_cut_short_is_a_truncated_error_even_when_it_parses(load):
    spec = load(definition()).get("advice")
    for text in ('{"tier": "sma', '{"tier": "small", "hints": []}'):
        out = read_json_output(spec, validator(), generated(text, finish="length"))
        assert out.error == TRUNCATED
        assert out.label is None and out.fields is None and not out.answered


@pytest.mark.parametrize(
    ("text", "error", "violation"),
    [
        (f"{{'tier': '{SECRET}'", INVALID_JSON, None),
        ("", INVALID_JSON, None),
        (f'{{"tier": "{SECRET}", "hints": []}}', SCHEMA_MISMATCH, "enum"),
        ('{"tier": "small"}', SCHEMA_MISMATCH, "required"),
        ('{"tier": "small", "hints": ["a", "b", "c"]}', SCHEMA_MISMATCH, "maxItems"),
        (f'{{"tier": "small", "hints": ["{SECRET}"]}}', SCHEMA_MISMATCH, "maxLength"),
        (f'["{SECRET}"]', SCHEMA_MISMATCH, "type"),
    ],
)
def test_unusable_output_is_an_explicit_error_that_never_quotes_it(load, text, error, violation):
    spec = load(definition()).get("advice")
    out = read_json_output(spec, validator(), generated(text))
    assert out.error == error
    assert out.fields is None and out.label is None and out.confidence == 0.0
    assert out.details.get("violation") == violation
    assert SECRET not in json.dumps(out.details) and SECRET not in repr(out)


def test_generated_text_reads_the_sampled_tokens_logprobs():
    step = SimpleNamespace
    output = SimpleNamespace(
        outputs=[
            SimpleNamespace(
                text="{}",
                finish_reason="stop",
                token_ids=[5, 9],
                logprobs=[{5: step(logprob=-0.5)}, {9: step(logprob=-0.25)}],
            )
        ]
    )
    got = generated_text(output)
    assert got == GeneratedText("{}", "stop", (-0.5, -0.25))
    output.outputs[0].logprobs = None
    assert generated_text(output).token_logprobs == ()


# The constraint sent to the engine


def matcher(grammar: str, tokenizer: Any) -> Any:
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer)
    return xgrammar.GrammarMatcher(xgrammar.GrammarCompiler(info).compile_grammar(grammar))


def test_the_grammar_takes_the_schemas_objects_with_bounded_whitespace(tokenizer):
    grammar = structured_outputs(SCHEMA).grammar
    assert structured_outputs(SCHEMA).json is None

    def accepts(text: str) -> bool:
        m = matcher(grammar, tokenizer)
        return bool(m.accept_string(text)) and bool(m.accept_token(tokenizer.eos_token_id))

    assert accepts('{"tier": "small", "hints": ["be exact"]}')
    assert accepts('{\n  "tier": "large",\n  "hints": [\n    "a",\n    "b"\n  ]\n}')
    assert not accepts('{"tier": "medium", "hints": []}')  # not in the enum
    assert not accepts('{"tier": "small", "hints": ["a", "b", "c"]}')  # maxItems
    padded = "{" + "\n" * MAX_WHITESPACE + '"tier": "small", "hints": []}'
    assert accepts(padded)
    assert not accepts("{" + "\n" * (MAX_WHITESPACE + 1) + '"tier": "small", "hints": []}')


def test_a_schema_xgrammar_cannot_express_goes_as_a_json_schema():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    params = structured_outputs(schema)
    assert params.json == schema and params.grammar is None


# Fitting the prompt


def layout(text_budget: int = 100, pad_id: int | None = None) -> QuestionLayout:
    return QuestionLayout(
        name="shared",
        prefix_ids=(1, 2, 3),
        glue_ids=(4,),
        text_budget=text_budget,
        pad_id=pad_id,
        block_size=8,
        question_head="",
        question_tail="",
        answer_prefix="",
    )


def test_a_prompt_that_fits_keeps_the_shared_part_of_the_text():
    text = list(range(100, 110))
    shared, _ = layout(pad_id=0).shared_ids(text)
    fitted = fitted_prompt(layout(pad_id=0), text, [7, 7], 64)
    assert fitted == ([*shared, 7, 7], False)


def test_a_prompt_that_does_not_fit_cuts_the_text_for_itself_only():
    text = list(range(100, 150))
    fitted = fitted_prompt(layout(pad_id=0), text, [7, 7], 30)
    assert fitted is not None
    ids, truncated = fitted
    assert truncated and len(ids) <= 30
    assert ids[:3] == [1, 2, 3] and ids[-3:] == [4, 7, 7]
    assert ids[3:-3] == text[: len(ids) - 6]  # the text's start, no padding
    assert fitted_prompt(layout(), text, list(range(40)), 30) is None


# The processor


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(prepared_model_folder("smollm2"))


class FakeEngine:
    """Answers each prompt from a script keyed by a word of its text; counts concurrency."""

    name = "smollm2"
    max_model_len = 2048
    block_size = 32

    def __init__(self, tokenizer: Any, answers: dict[str, str | Exception]) -> None:
        self.tokenizer = tokenizer
        self.answers = answers
        self.prompts: list[list[int]] = []
        self.params: list[Any] = []
        self.running = 0
        self.max_running = 0

    async def with_tokenizer(self, work: Callable[[Any], Any]) -> Any:
        return work(self.tokenizer)

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [encode(self.tokenizer, text) for text in texts]

    async def generate(self, ids: Sequence[int], params: Any, affinity: str | None = None) -> Any:
        self.prompts.append(list(ids))
        self.params.append(params)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        prompt = self.tokenizer.decode(ids)
        answer = next(a for key, a in self.answers.items() if key in prompt)
        if isinstance(answer, Exception):
            raise answer
        ids_out = encode(self.tokenizer, answer)
        completion = SimpleNamespace(
            text=answer,
            finish_reason="stop",
            token_ids=ids_out,
            logprobs=[{t: SimpleNamespace(logprob=math.log(0.5))} for t in ids_out],
        )
        return SimpleNamespace(outputs=[completion])


def run(
    engine: FakeEngine, spec: CapabilitySpec, texts: Sequence[str], deps: Any = None
) -> list[Any]:
    processor = JsonOutputProcessor(engine)  # type: ignore[arg-type]
    inputs = [ProcessorInput(text, deps or {}) for text in texts]
    return list(asyncio.run(processor.run(spec, inputs, WindowContext())))


def test_every_text_is_asked_at_once_and_fails_alone(load, tokenizer):
    spec = load(definition(layout="own")).get("advice")
    engine = FakeEngine(
        tokenizer,
        {
            "alpha": '{"tier": "small", "hints": []}',
            "beta": '{"tier": "huge", "hints": []}',
            "gamma": "not json",
            "delta": RuntimeError(f"engine said {SECRET}"),
        },
    )
    results = run(engine, spec, ["alpha text", "beta text", "gamma text", "delta text"])
    assert engine.max_running == 4
    assert isinstance(results[0], CapabilityResult) and results[0].label == "small"
    assert results[0].confidence == pytest.approx(0.5)
    assert isinstance(results[1], CapabilityResult) and results[1].error == SCHEMA_MISMATCH
    assert isinstance(results[2], CapabilityResult) and results[2].error == INVALID_JSON
    assert results[3] == ItemFailure("RuntimeError")
    params = engine.params[0]
    assert params.temperature == 0.0 and params.max_tokens == 40 and params.logprobs == 0
    expected = structured_outputs(spec.definition.output_schema or {})
    assert params.structured_outputs.grammar == expected.grammar


def test_each_capability_sends_its_own_schema_on_the_same_engine(load, tokenizer):
    other_schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    registry = load(
        definition("advice"),
        definition("check", output_schema=other_schema, label_field=None),
    )
    engine = FakeEngine(tokenizer, {"advice": '{"tier": "small", "hints": []}', "check": "{}"})
    run(engine, registry.get("advice"), ["some text"])
    run(engine, registry.get("check"), ["some text"])
    grammars = [p.structured_outputs.grammar for p in engine.params]
    schemas = [registry.get(name).definition.output_schema or {} for name in ("advice", "check")]
    assert grammars == [structured_outputs(schema).grammar for schema in schemas]
    assert grammars[0] != grammars[1]


def test_the_shared_layout_puts_the_text_after_the_groups_system_part(load, tokenizer):
    registry = load(
        definition("advice", layout="shared"),
        {
            "name": "mood",
            "kind": "llm_choice",
            "model": "smollm2",
            "labels": ["happy", "sad"],
            "prompt": {"instructions": "Say the mood.", "cue": "Question: mood\n"},
        },
    )
    spec = registry.get("advice")
    assert spec.group is not None
    engine = FakeEngine(tokenizer, {"advice": '{"tier": "small", "hints": []}'})
    (result,) = run(engine, spec, ["The weather is nice"])
    assert isinstance(result, CapabilityResult) and result.details["layout"] == "shared"
    prompt = tokenizer.decode(engine.prompts[0])
    system = spec.group.system_text()
    assert "Say the mood." in system and "Advise, as JSON." in system
    assert prompt.index(system) < prompt.index("The weather is nice")
    assert prompt.index("The weather is nice") < prompt.index("Question: advice")


def test_the_cue_renders_upstream_results_after_the_text(load, tokenizer):
    upstream = {
        "name": "kind_of_task",
        "kind": "embedding_similarity",
        "model": "minilm",
        "labels": ["code", "chat"],
    }
    spec = load(
        upstream,
        definition(
            layout="own",
            depends_on=["kind_of_task"],
            prompt={"instructions": "Advise.", "cue": "Task: {{ deps.kind_of_task.label }}\n"},
        ),
    ).get("advice")
    engine = FakeEngine(tokenizer, {"Task: code": '{"tier": "large", "hints": []}'})
    deps = {"kind_of_task": CapabilityResult("kind_of_task", "v", "code", 0.9, {"code": 0.9})}
    (result,) = run(engine, spec, ["Write a parser"], deps)
    assert isinstance(result, CapabilityResult) and result.label == "large"
    prompt = tokenizer.decode(engine.prompts[0])
    assert prompt.index("Write a parser") < prompt.index("Task: code")


def test_a_long_text_is_cut_so_the_answer_fits_the_context(load, tokenizer):
    spec = load(definition(layout="own", max_tokens=1000)).get("advice")
    engine = FakeEngine(tokenizer, {"word": '{"tier": "small", "hints": []}'})
    (result,) = run(engine, spec, ["word " * 3000])
    assert isinstance(result, CapabilityResult) and result.details.get("truncated") is True
    assert len(engine.prompts[0]) <= engine.max_model_len - 1000


class BlockingEngine(FakeEngine):
    """Answers as FakeEngine, except prompts about `slow`, which wait until cancelled."""

    def __init__(self, tokenizer: Any, answers: dict[str, str | Exception], slow: str) -> None:
        super().__init__(tokenizer, answers)
        self.slow = slow
        self.cancelled = 0

    async def generate(self, ids: Sequence[int], params: Any, affinity: str | None = None) -> Any:
        if self.slow in self.tokenizer.decode(ids):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().generate(ids, params)


def test_an_abandoned_text_has_its_generation_cancelled_and_the_others_answer(load, tokenizer):
    spec = load(definition(layout="own")).get("advice")
    engine = BlockingEngine(tokenizer, {"alpha": '{"tier": "small", "hints": []}'}, slow="gone")
    processor = JsonOutputProcessor(engine)  # type: ignore[arg-type]
    inputs = [ProcessorInput("gone text", {}), ProcessorInput("alpha text", {})]

    async def scenario() -> list[Any]:
        context = WindowContext()

        async def abandon() -> None:
            await asyncio.sleep(0.2)
            context.abandon(["gone text"])

        outcomes, _ = await asyncio.wait_for(
            asyncio.gather(processor.run(spec, inputs, context), abandon()), 10
        )
        return list(outcomes)

    results = asyncio.run(scenario())
    assert results[0] == ItemAbandoned() and engine.cancelled == 1
    assert isinstance(results[1], CapabilityResult) and results[1].label == "small"

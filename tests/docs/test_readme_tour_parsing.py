"""How the walk reads a page: runnable blocks, continuations, documented output, saved files, and
command blocks left unmarked."""

from __future__ import annotations

from tests.docs.readme_tour import page_steps, unmarked_blocks

FENCE = "```"
PAGE = "\n".join(
    [
        "# project",
        f'{FENCE}python title="make.py"',
        "print('hi')",
        FENCE,
        f'{FENCE}bash title="run"',
        "# a comment, not a command",
        "hotserve train     # trailing comment",
        "#> wrote checkpoints/fraud/1 (model fraud version 1, ...)",
        'curl -s localhost:8080/v1 -d \'{"a": 1,',
        '  "b": 2}\'',
        "hotserve import x.onnx \\",
        "    --name y",
        FENCE,
        f'{FENCE}yaml title="repo/feature_store.yaml"',
        "project: rides",
        FENCE,
        f'{FENCE}bash title="illustration"',
        "hotserve train --dataset my.parquet",
        FENCE,
        f"{FENCE}bash",
        "helm install x",
        FENCE,
        f"{FENCE}json",
        '{"not": "a command"}',
        FENCE,
        "",
    ]
)


def test_runnable_blocks_are_read_with_their_continuations_and_documented_output() -> None:
    steps = page_steps(PAGE, "page.md")
    assert [(s.file, s.command) for s in steps] == [
        ("make.py", "print('hi')\n"),
        (None, "hotserve train     # trailing comment"),
        (None, 'curl -s localhost:8080/v1 -d \'{"a": 1,\n  "b": 2}\''),
        (None, "hotserve import x.onnx \\\n    --name y"),
        ("repo/feature_store.yaml", "project: rides\n"),
    ]  # the illustration and the unmarked block are not run
    assert steps[1].expected == ["wrote checkpoints/fraud/1 (model fraud version 1, ...)"]


def test_a_command_block_without_a_title_is_unmarked() -> None:
    assert [(b.language, b.body, b.line) for b in unmarked_blocks(PAGE)] == [("bash", "helm install x\n", 20)]


def test_a_documented_output_line_must_match_a_line_of_what_the_command_printed() -> None:
    step = page_steps(PAGE, "page.md")[1]
    assert step.matches("epoch 20\nwrote checkpoints/fraud/1 (model fraud version 1, binary, best epoch 20)\n") == []
    assert step.matches("wrote checkpoints/fraud/2 (model fraud version 2, binary)\n") == [
        "wrote checkpoints/fraud/1 (model fraud version 1, ...)"
    ]

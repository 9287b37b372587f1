"""How the tour walk reads the README: commands, continuations, documented output, written files."""

from __future__ import annotations

from tests.docs.readme_tour import TOUR_SECTIONS, tour_steps

FENCE = "```"
README = "\n".join(
    [
        "# project",
        f"## {TOUR_SECTIONS[0]}",
        f"{FENCE}python",
        "# make.py: writes a file",
        "print('hi')",
        FENCE,
        f"{FENCE}bash",
        "# a comment, not a command",
        "hotserve train     # trailing comment",
        "#> wrote checkpoints/fraud/1 (model fraud version 1, ...)",
        'curl -s localhost:8080/v1 -d \'{"a": 1,',
        '  "b": 2}\'',
        "hotserve import x.onnx \\",
        "    --name y",
        FENCE,
        *(f"## {name}\n" for name in TOUR_SECTIONS[1:]),
        "## Deploy",
        f"{FENCE}bash\nhelm install x\n{FENCE}",
        "",
    ]
)


def test_commands_are_read_with_their_continuations_and_documented_output() -> None:
    steps = tour_steps(README)
    assert [(s.file, s.command) for s in steps] == [
        ("make.py", "# make.py: writes a file\nprint('hi')\n"),
        (None, "hotserve train     # trailing comment"),
        (None, 'curl -s localhost:8080/v1 -d \'{"a": 1,\n  "b": 2}\''),
        (None, "hotserve import x.onnx \\\n    --name y"),
    ]  # the Deploy section is no part of the tour
    assert steps[1].expected == ["wrote checkpoints/fraud/1 (model fraud version 1, ...)"]


def test_a_documented_output_line_must_match_a_line_of_what_the_command_printed() -> None:
    step = tour_steps(README)[1]
    assert step.matches("epoch 20\nwrote checkpoints/fraud/1 (model fraud version 1, binary, best epoch 20)\n") == []
    assert step.matches("wrote checkpoints/fraud/2 (model fraud version 2, binary)\n") == [
        "wrote checkpoints/fraud/1 (model fraud version 1, ...)"
    ]

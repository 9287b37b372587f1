"""Common options of `hotserve models` go before the action or after it, as `release` takes them."""

from __future__ import annotations

import pytest

from server.admin_cli import DEFAULT_URL
from server.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "list", "--url", "http://replica:9", "--json", "--timeout-s", "3"],
        ["models", "--url", "http://replica:9", "--json", "--timeout-s", "3", "list"],
        ["models", "--url", "http://replica:9", "list", "--json", "--timeout-s", "3"],
    ],
)
def test_common_options_are_taken_before_or_after_the_action(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.action, args.url, args.json, args.timeout_s) == ("list", "http://replica:9", True, 3.0)


def test_an_option_after_the_action_overrides_and_the_defaults_hold_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOTSERVE_URL", raising=False)
    parser = build_parser()
    plain = parser.parse_args(["models", "load", "fraud", "3"])
    assert (plain.url, plain.json, plain.timeout_s) == (DEFAULT_URL, False, 300.0)
    both = parser.parse_args(["models", "--url", "http://a:1", "promote", "fraud", "3", "--url", "http://b:2"])
    assert both.url == "http://b:2"

"""kmdb.extract.names: which file names of an export are revision files."""

from __future__ import annotations

import pytest

from kmdb.extract.names import revision_names, say_skipped


def test_revisions_are_n_json_directly_in_revisions_without_leading_zeros() -> None:
    names = [
        "140.json",
        "7.json",
        "0.json",
        "007.json",
        "08.json",
        "x.json",
        "3.json.bak",
        "old/revisions/9.json",
        "\u0661.json",  # an Arabic-Indic one: a digit to \\d, not a revision number
        "140.json",
        "",  # the folder itself, as S3 lists a folder marker
    ]
    assert revision_names(names) == (
        [0, 7, 140],
        ["007.json", "08.json", "3.json.bak", "old/revisions/9.json", "x.json", "\u0661.json"],
    )


def test_files_skipped_are_said_in_one_warning_that_names_the_first_few(
    caplog: pytest.LogCaptureFixture,
) -> None:
    say_skipped("s3://b/revisions/", [])
    assert caplog.records == []
    say_skipped("folder/revisions", ["007.json"])
    assert caplog.messages == [
        "Skipping a file in folder/revisions that is not named N.json (N a number without "
        "leading zeros): 007.json."
    ]
    caplog.clear()
    say_skipped("folder/revisions", [f"{n:02}.json" for n in range(12)])
    (said,) = caplog.messages
    assert said.startswith("Skipping 12 files in folder/revisions that are not named N.json")
    assert said.endswith(
        "00.json, 01.json, 02.json, 03.json, 04.json, 05.json, 06.json, "
        "07.json, 08.json, 09.json and 2 more."
    )

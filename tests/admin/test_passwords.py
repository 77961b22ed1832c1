"""The password policy alone: short and common passwords refused, generated ones strong."""

from __future__ import annotations

import pytest

from smartswitch.admin.passwords import MAX_LENGTH, check_password, generate_password


@pytest.mark.parametrize(
    "password",
    [
        "letmein300",  # the issue's: short
        "correcthors",  # 11 characters
        "password1234567",  # a list entry with digits
        "Liverpool2024!",
        "qwertyuiop1234",  # a keyboard run
        "alicealice2024",  # the username, repeated
        "x" * (MAX_LENGTH + 1),
    ],
)
def test_refused(password: str) -> None:
    with pytest.raises(ValueError, match=r"too short|too common|too long"):
        check_password(password, "alice")


@pytest.mark.parametrize(
    "password",
    ["letmein300letmein", "yellow-kettle-91", "correct horse battery", "yellow-kettle-91 " * 6],
)
def test_accepted(password: str) -> None:
    assert check_password(password, "alice") == password


def test_generated_passwords_are_strong_and_new() -> None:
    made = {generate_password() for _ in range(50)}
    assert len(made) == 50
    for password in made:
        assert len(password) == 23 and check_password(password) == password

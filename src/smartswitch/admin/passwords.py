"""The password policy of digest secrets: subscribers' passwords and customers' digest passwords.

One rule for every front door (provisioning, the REST API, the web UI, ``smartswitch
subscriber password``): the readers of :mod:`.readers` apply :func:`check_password` to a
password that is *given*; a password left out keeps the stored one and is not judged again
(a subscriber's is stored only as hashes, which cannot be judged).

A password is refused when it is

* **short**: under :data:`MIN_LENGTH` (12) characters, or over :data:`MAX_LENGTH` (128);
* **common**: zxcvbn (the PyPI package ``zxcvbn``, Dropbox's estimator ported to Python, MIT
  licence) finds it in, or builds it from, its frequency lists (30 000 common passwords from
  leaked password sets, English words from Wikipedia and film and TV subtitles, common names
  and surnames), with the username as one more word, and estimates it can be guessed in fewer
  than 10^8 tries (zxcvbn's score under 3). That catches ``password1234567``,
  ``Liverpool2024!``, ``qwertyuiop123``, ``aliceAlice1234``: a list word with digits added,
  capitals, l33t substitutions, keyboard runs, repeats, dates.

Not judged: a peer's ``register`` password (the supplier's, not ours to choose) and HA1s given
instead of a subscriber's password (they cannot be). Why a digest secret needs this when the
guard (:mod:`smartswitch.registrar.guard`) limits guesses: a captured REGISTER can be guessed
against offline, at billions of tries a second, where no guard is.
"""

from __future__ import annotations

import secrets
import threading

from zxcvbn import zxcvbn

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "check_password", "generate_password"]

MIN_LENGTH = 12
MAX_LENGTH = 128
MIN_SCORE = 3  # zxcvbn: 3 is "safely unguessable: moderate protection from offline attacks"
_ZXCVBN_LENGTH = 72  # zxcvbn refuses longer input (its matching is quadratic)
# zxcvbn keeps the user inputs of a call in a module-level dictionary: one call at a time.
_lock = threading.Lock()

# Generated passwords: lowercase letters and digits without the look-alikes (0 o 1 l i), in
# groups of five, easy to type on a phone's keypad; 20 characters are 100 bits.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_GROUPS = 4


def check_password(password: str, username: str | None = None) -> str:
    """``password`` if the policy accepts it; else :class:`ValueError` with the reason, fit to
    show next to the field. Pure CPU (a few milliseconds)."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"too short: at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"too long: at most {MAX_LENGTH} characters")
    inputs = [username] if username else []
    with _lock:
        result = zxcvbn(password[:_ZXCVBN_LENGTH], user_inputs=inputs)
    if result["score"] < MIN_SCORE:
        warning = result["feedback"]["warning"] or "it is built from common words or patterns"
        raise ValueError(
            f"too common or predictable ({warning.rstrip('.').lower()}; zxcvbn's lists of "
            "common passwords and words): choose a longer, less predictable one"
        )
    return password


def generate_password() -> str:
    """A new strong password: four groups of five (``x7kqm-...``), about 100 bits."""
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(_GROUPS))
    return check_password("-".join(groups))
